package integration

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestGoRedisLargeValue stores and reads back a 100 MB value through the
// proxy and checks every byte.
func TestGoRedisLargeValue(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MB value")
	}
	st := sharedStack(t, true)
	ctx := testContext(t, 3*time.Minute)
	c := st.Client(&redis.Options{ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxRetries: -1})
	defer c.Close()
	key := keyPrefix(t) + "big"
	// Every 1 MiB block differs (its index is in it), so a block dropped,
	// repeated or swapped is caught, not only a short read.
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 7)
	}
	val := make([]byte, 0, 100<<20)
	for i := range 100 {
		copy(block, fmt.Sprintf("block %03d|", i))
		val = append(val, block...)
	}
	defer c.Unlink(context.Background(), key)
	began := time.Now()
	if err := c.Set(ctx, key, val, 0).Err(); err != nil {
		t.Fatalf("SET 100 MB: %v", err)
	}
	got, err := c.Get(ctx, key).Bytes()
	if err != nil {
		t.Fatalf("GET 100 MB: %v", err)
	}
	t.Logf("100 MB SET+GET through the proxy took %v", time.Since(began).Round(time.Millisecond))
	if len(got) != len(val) {
		t.Fatalf("GET returned %d bytes, want %d", len(got), len(val))
	}
	if !bytes.Equal(got, val) {
		for i := range val {
			if got[i] != val[i] {
				t.Fatalf("GET differs from the value SET at byte %d: %#x, want %#x", i, got[i], val[i])
			}
		}
	}
	// The connection is still in step after the large reply.
	if v, err := c.Echo(ctx, "after").Result(); err != nil || v != "after" {
		t.Errorf("ECHO after the large value = %q, %v", v, err)
	}
	if n, err := c.StrLen(ctx, key).Result(); err != nil || n != int64(len(val)) {
		t.Errorf("STRLEN = %d, %v", n, err)
	}
}
