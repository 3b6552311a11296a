package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// withSecrets sets every redact-tagged field to a distinct secret and returns
// the secrets.
func withSecrets(c *Config) []string {
	var secrets []string
	v := reflect.ValueOf(c).Elem()
	eachSetting(v, func(key string, f reflect.Value, sf reflect.StructField) {
		if sf.Tag.Get("redact") == "true" {
			s := "s3cret-" + key
			f.SetString(s)
			secrets = append(secrets, s)
		}
	})
	return secrets
}

func TestRedaction(t *testing.T) {
	c := valid(func(*Config) {})
	secrets := withSecrets(&c)
	if len(secrets) < 2 {
		t.Fatalf("found %d secret fields, want at least SentinelPassword and BackendPassword", len(secrets))
	}
	zapJSON := func(c Config) string {
		var buf bytes.Buffer
		enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zap.DebugLevel))
		log.Info("starting", zap.Object("config", c), zap.Any("any", c))
		return buf.String()
	}
	tests := []struct {
		name string
		out  func(Config) string
	}{
		{"String", Config.String},
		{"%v", func(c Config) string { return fmt.Sprintf("%v", c) }},
		{"%+v", func(c Config) string { return fmt.Sprintf("%+v", c) }},
		{"%#v", func(c Config) string { return fmt.Sprintf("%#v", c) }},
		{"%s of pointer", func(c Config) string { return fmt.Sprintf("%s", &c) }},
		{"%d", func(c Config) string { return fmt.Sprintf("%d", c) }},
		{"%x", func(c Config) string { return fmt.Sprintf("%x", c) }},
		{"%q", func(c Config) string { return fmt.Sprintf("%q", c) }},
		{"Redacted %#v of fields", func(c Config) string { return fmt.Sprintf("%#v", plainOf(c.Redacted())) }},
		{"json", func(c Config) string {
			b, err := json.Marshal(c)
			if err != nil {
				return "json error: " + err.Error()
			}
			return string(b)
		}},
		{"zap", zapJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tt.out(c)
			for _, s := range secrets {
				if strings.Contains(out, s) || strings.Contains(out, fmt.Sprintf("%x", s)) {
					t.Fatalf("output leaks %q:\n%s", s, out)
				}
			}
			if !strings.Contains(out, RedactedValue) && tt.name != "%x" {
				t.Fatalf("output does not show %s:\n%s", RedactedValue, out)
			}
			if !strings.Contains(out, "mymaster") && tt.name != "%x" {
				t.Fatalf("output lacks the non-secret settings:\n%s", out)
			}
		})
	}

	if got := c.SentinelPassword; got != "s3cret-sentinel_password" {
		t.Errorf("printing changed the original: SentinelPassword = %q", got)
	}
}

func TestRedactedCopy(t *testing.T) {
	c := valid(func(c *Config) { c.BackendPassword = "pw" })
	r := c.Redacted()
	if r.BackendPassword != RedactedValue || r.SentinelPassword != "" {
		t.Fatalf("Redacted: backend %q (want %q), sentinel %q (want empty: unset stays unset)",
			r.BackendPassword, RedactedValue, r.SentinelPassword)
	}
	r.Sentinels[0] = "changed:1"
	r.Groups[0].Listen = "changed:1"
	if c.Sentinels[0] == "changed:1" || c.Groups[0].Listen == "changed:1" || c.BackendPassword != "pw" {
		t.Fatalf("Redacted shares memory with the original: %#v", plainOf(c))
	}
}

// TestZapFields checks the structure zap receives, not just its absence of
// secrets.
func TestZapFields(t *testing.T) {
	c := valid(func(c *Config) { c.SentinelPassword = "pw" })
	enc := zapcore.NewMapObjectEncoder()
	if err := c.MarshalLogObject(enc); err != nil {
		t.Fatal(err)
	}
	if enc.Fields["sentinel_password"] != RedactedValue || enc.Fields["hold_timeout"] != c.HoldTimeout {
		t.Fatalf("zap fields = %v", enc.Fields)
	}
	groups, ok := enc.Fields["groups"].([]any)
	if !ok || len(groups) != 1 || groups[0].(map[string]any)["master_name"] != "mymaster" {
		t.Fatalf("zap groups = %#v", enc.Fields["groups"])
	}
}

// TestSecretFieldsTagged guards future fields: anything named like a secret
// must carry the redact tag, or the printers would show it.
func TestSecretFieldsTagged(t *testing.T) {
	var check func(reflect.Type)
	check = func(typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := strings.ToLower(f.Name)
			for _, word := range []string{"password", "secret", "token", "privatekey"} {
				if strings.Contains(name, word) && f.Tag.Get("redact") != "true" {
					t.Errorf("%s.%s looks secret but has no redact:\"true\" tag", typ.Name(), f.Name)
				}
			}
			switch ft := f.Type; {
			case ft.Kind() == reflect.Struct:
				check(ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				check(ft.Elem())
			}
		}
	}
	check(reflect.TypeFor[Config]())
}
