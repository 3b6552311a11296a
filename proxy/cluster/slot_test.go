package cluster

import (
	"bytes"
	"testing"
)

// TestCRC16 checks the checksum against the XMODEM check value and the
// Redis Cluster specification's example.
func TestCRC16(t *testing.T) {
	if got := crc16([]byte("123456789")); got != 0x31C3 {
		t.Errorf("crc16(123456789) = %#04x, want 0x31c3 (XMODEM check value)", got)
	}
	if got := crc16(nil); got != 0 {
		t.Errorf("crc16(empty) = %#04x, want 0", got)
	}
}

// TestSlot checks known slots and the hash tag rules of keyHashSlot.
func TestSlot(t *testing.T) {
	tests := []struct {
		key  string
		want uint16
	}{
		// 0x31C3 & 16383, and values CLUSTER KEYSLOT gives (the
		// integration test compares thousands more with the server).
		{"123456789", 12739},
		{"", 0},
		{"foo", 12182},
		{"bar", 5061},
		{"somekey", 11058},
		{"foo{hash_tag}", 2515},
		{"bar{hash_tag}", 2515},
	}
	for _, tc := range tests {
		if got := Slot([]byte(tc.key)); got != tc.want {
			t.Errorf("Slot(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

// TestHashTag checks which part of a key is hashed.
func TestHashTag(t *testing.T) {
	tests := []struct{ key, hashed string }{
		{"{user1000}.following", "user1000"},
		{"foo{bar}zap", "bar"},
		{"a{b}{c}", "b"},           // the first tag only
		{"{}", "{}"},               // empty tag: the whole key
		{"{}{a}", "{}{a}"},         // the first '{' has an empty tag: whole key
		{"{{a}}", "{a"},            // first '{', first '}' after it
		{"foo{{bar}}zap", "{bar"},  // the same
		{"a{", "a{"},               // no '}'
		{"a}b{", "a}b{"},           // '}' only before the '{'
		{"{a", "{a"},               // unterminated
		{"}{a}", "a"},              // a '}' before the '{' does not count
		{"x{\x00}y", "\x00"},       // any byte
		{"{ab}{", "ab"},            // trailing '{' ignored
		{"no tags", "no tags"},     // plain key
		{"{\xff\xfe}", "\xff\xfe"}, // binary tag
		{"a{b{c}d}", "b{c"},        // nested '{' is part of the tag
		{"{}}", "{}}"},             // empty first tag
		{"{{}}", "{"},              // tag is "{"
		{"user{1}:a", "1"},         // typical
		{"user{1}:b{2}", "1"},      // typical, second tag ignored
		{"{" + string(make([]byte, 300)) + "}", string(make([]byte, 300))},
	}
	for _, tc := range tests {
		if got := hashTag([]byte(tc.key)); string(got) != tc.hashed {
			t.Errorf("hashTag(%q) = %q, want %q", tc.key, got, tc.hashed)
		}
		if got, want := Slot([]byte(tc.key)), crc16([]byte(tc.hashed))&(Slots-1); got != want {
			t.Errorf("Slot(%q) = %d, want the slot of %q = %d", tc.key, got, tc.hashed, want)
		}
	}
}

// FuzzSlot compares Slot with a second, literal transcription of Redis's
// keyHashSlot and its bitwise CRC16.
func FuzzSlot(f *testing.F) {
	for _, s := range []string{"", "{}", "{{a}}", "a{b}{c}", "{a", "foo{bar}", "123456789"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		if got, want := Slot(key), referenceSlot(key); got != want {
			t.Fatalf("Slot(%q) = %d, reference %d", key, got, want)
		}
		if s := Slot(key); s >= Slots {
			t.Fatalf("Slot(%q) = %d, out of range", key, s)
		}
		if i := bytes.IndexByte(key, '{'); i >= 0 {
			if j := bytes.IndexByte(key[i+1:], '}'); j > 0 && Slot(key) != Slot(key[i+1:i+1+j]) {
				t.Fatalf("Slot(%q) differs from the slot of its tag %q", key, key[i+1:i+1+j])
			}
		}
	})
}

// referenceSlot is keyHashSlot from Redis's cluster.c, index by index, with
// a bitwise CRC16-XMODEM.
func referenceSlot(key []byte) uint16 {
	keylen := len(key)
	var s, e int
	for s = 0; s < keylen; s++ {
		if key[s] == '{' {
			break
		}
	}
	if s == keylen {
		return bitCRC(key) & 0x3FFF
	}
	for e = s + 1; e < keylen; e++ {
		if key[e] == '}' {
			break
		}
	}
	if e == keylen || e == s+1 {
		return bitCRC(key) & 0x3FFF
	}
	return bitCRC(key[s+1:e]) & 0x3FFF
}

func bitCRC(b []byte) uint16 {
	var crc uint16
	for _, x := range b {
		crc ^= uint16(x) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
