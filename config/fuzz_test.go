package config

import (
	"os"
	"reflect"
	"testing"
)

// FuzzLoadFile feeds arbitrary config files to Load and Validate. Neither may
// panic, and a file that validates must print (String) as a file that loads
// back to the same configuration.
func FuzzLoadFile(f *testing.F) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		twoGroups,
		"sentinels: \"a:1, b:2\"\ngroups: [{master_name: m, listen: ':1'}]\n",
		"hold_timeout: 5\ngroups: [{master_name: m, lisen: x}]\n",
		"groups: [{name: shop, cluster_nodes: [\"a:1\", b], listen: ':1'}]\n",
		"groups: [{name: shop, cluster_nodes: [\"a:1\", \"[::1]:2\"], listen: ':1'}, {cluster_nodes: [c:3], listen: ':2'}]\n",
		clusterGroups,
		"sentinel_username: \"\\x80\\u00e9\"\n",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, file string) {
		c, err := load(t, nil, nil, file)
		if err != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		// Secrets print as REDACTED; compare without them.
		eachSetting(reflect.ValueOf(&c).Elem(), func(_ string, f reflect.Value, sf reflect.StructField) {
			if sf.Tag.Get("redact") == "true" {
				f.SetString("")
			}
		})
		back, err := load(t, nil, nil, c.String())
		if err != nil {
			t.Fatalf("Load(String()): %v\n%s", err, c)
		}
		// Users' secrets too: String shows them as REDACTED.
		for _, users := range [][]User{c.Users, back.Users} {
			for i := range users {
				users[i].Password, users[i].PasswordSHA256 = "", ""
			}
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("round trip changed the config:\n%#v\nbecame\n%#v", plainOf(c), plainOf(back))
		}
	})
}
