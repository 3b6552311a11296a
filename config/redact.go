package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// RedactedValue is what secrets are replaced with; an unset secret stays "" so
// that the output still shows whether one is configured.
const RedactedValue = "REDACTED"

// Redacted returns a deep copy of c with every secret (fields tagged
// redact:"true", at any depth) replaced by RedactedValue.
func (c Config) Redacted() Config {
	v := reflect.ValueOf(&c).Elem()
	redact(v)
	c.problems = slices.Clone(c.problems)
	return c
}

// redact replaces the secrets of the addressable struct v in place, cloning
// slices first so that the caller's copy keeps its backing arrays untouched.
func redact(v reflect.Value) {
	eachSetting(v, func(_ string, f reflect.Value, sf reflect.StructField) {
		switch {
		case sf.Tag.Get("redact") == "true" && f.Kind() == reflect.String:
			if f.String() != "" {
				f.SetString(RedactedValue)
			}
		case f.Kind() == reflect.Struct:
			redact(f)
		case f.Kind() == reflect.Slice && !f.IsNil():
			clone := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			reflect.Copy(clone, f)
			f.Set(clone)
			if f.Type().Elem().Kind() == reflect.Struct {
				for i := range f.Len() {
					redact(f.Index(i))
				}
			}
		}
	})
}

// eachSetting calls fn for every exported field of the struct v that has a
// file key, in declaration order.
func eachSetting(v reflect.Value, fn func(key string, f reflect.Value, sf reflect.StructField)) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if key := sf.Tag.Get("mapstructure"); sf.IsExported() && key != "" {
			fn(key, v.Field(i), sf)
		}
	}
}

// String returns c, secrets redacted, as YAML in the config file's format.
func (c Config) String() string {
	var b strings.Builder
	writeYAML(&b, reflect.ValueOf(c.Redacted()), "")
	return b.String()
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %d, ...) print the redacted
// form, so a stray Printf cannot leak a secret.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		type plain Config // drops the methods, so %#v prints the fields
		fmt.Fprintf(f, "%#v", plain(c.Redacted()))
		return
	}
	_, _ = io.WriteString(f, c.String())
}

// MarshalLogObject lets zap log c, secrets redacted: zap.Object("config", c).
func (c Config) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return encodeObject(enc, reflect.ValueOf(c.Redacted()))
}

// MarshalJSON encodes c, secrets redacted, with the file's keys and
// durations as strings ("5s").
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonValue(reflect.ValueOf(c.Redacted())))
}

func writeYAML(b *strings.Builder, v reflect.Value, indent string) {
	eachSetting(v, func(key string, f reflect.Value, _ reflect.StructField) {
		switch {
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			if f.Len() == 0 {
				fmt.Fprintf(b, "%s%s: []\n", indent, key)
				return
			}
			fmt.Fprintf(b, "%s%s:\n", indent, key)
			for i := range f.Len() {
				var item strings.Builder
				writeYAML(&item, f.Index(i), "")
				for j, line := range strings.SplitAfter(strings.TrimSuffix(item.String(), "\n"), "\n") {
					lead := "    "
					if j == 0 {
						lead = "  - "
					}
					b.WriteString(indent + lead + strings.TrimSuffix(line, "\n") + "\n")
				}
			}
		case f.Kind() == reflect.Struct && f.Type() != reflect.TypeFor[time.Duration]():
			fmt.Fprintf(b, "%s%s:\n", indent, key)
			writeYAML(b, f, indent+"  ")
		default:
			fmt.Fprintf(b, "%s%s: %s\n", indent, key, yamlScalar(f))
		}
	})
}

// yamlScalar renders a leaf value; strings are double-quoted, which YAML
// reads back with Go's escapes.
func yamlScalar(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return x.String()
	case string:
		return strconv.Quote(x)
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	default:
		return fmt.Sprint(x)
	}
}

func encodeObject(enc zapcore.ObjectEncoder, v reflect.Value) error {
	var err error
	eachSetting(v, func(key string, f reflect.Value, _ reflect.StructField) {
		switch x := f.Interface().(type) {
		case string:
			enc.AddString(key, x)
		case time.Duration:
			enc.AddDuration(key, x)
		case []string:
			err = errors.Join(err, enc.AddArray(key, zapcore.ArrayMarshalerFunc(func(ae zapcore.ArrayEncoder) error {
				for _, s := range x {
					ae.AppendString(s)
				}
				return nil
			})))
		default:
			switch {
			case f.Kind() == reflect.Struct:
				err = errors.Join(err, enc.AddObject(key, objectOf(f)))
			case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
				err = errors.Join(err, enc.AddArray(key, zapcore.ArrayMarshalerFunc(func(ae zapcore.ArrayEncoder) error {
					for i := range f.Len() {
						if err := ae.AppendObject(objectOf(f.Index(i))); err != nil {
							return err
						}
					}
					return nil
				})))
			default:
				err = errors.Join(err, enc.AddReflected(key, x))
			}
		}
	})
	return err
}

func objectOf(v reflect.Value) zapcore.ObjectMarshaler {
	return zapcore.ObjectMarshalerFunc(func(enc zapcore.ObjectEncoder) error { return encodeObject(enc, v) })
}

// jsonValue converts a struct into maps keyed like the file, recursively.
func jsonValue(v reflect.Value) any {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.Struct:
		m := make(map[string]any)
		eachSetting(v, func(key string, f reflect.Value, _ reflect.StructField) { m[key] = jsonValue(f) })
		return m
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		items := make([]any, v.Len())
		for i := range items {
			items[i] = jsonValue(v.Index(i))
		}
		return items
	default:
		return v.Interface()
	}
}
