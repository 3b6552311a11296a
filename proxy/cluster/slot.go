package cluster

import "bytes"

// Slots is the number of hash slots of every Redis Cluster.
const Slots = 16384

// crcTable is CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0, no
// reflection), the checksum Redis Cluster hashes keys with (crc16.c).
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 returns the XMODEM CRC16 of b.
func crc16(b []byte) uint16 {
	var c uint16
	for _, x := range b {
		c = c<<8 ^ crcTable[byte(c>>8)^x]
	}
	return c
}

// Slot returns the hash slot of key, exactly as Redis's keyHashSlot: if the
// key has a '{' followed later by a '}' with at least one byte between the
// first '{' and the first '}' after it, only those bytes are hashed (the
// hash tag); otherwise the whole key is.
func Slot(key []byte) uint16 {
	return crc16(hashTag(key)) & (Slots - 1)
}

// hashTag returns the part of key that Slot hashes: the bytes after the
// first '{' up to the first '}' after it, if there are any, else the key.
func hashTag(key []byte) []byte {
	open := bytes.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	n := bytes.IndexByte(key[open+1:], '}')
	if n <= 0 { // no '}', or "{}": the whole key is hashed
		return key
	}
	return key[open+1 : open+1+n]
}
