// Package config turns the command line, the SENTINEL_PROXY_* environment and
// an optional YAML file into a plain Config value, checks it, and prints it
// with its secrets redacted.
//
// It owns the proxy's whole configuration surface: flag names, environment
// variable names, file keys, defaults, the --help text and the validation
// rules. It is the only package that imports viper, and it uses viper.New()
// instances only, never the global one. Nothing here opens a socket or starts
// a goroutine: Load reads the file named on the command line and returns, and
// Validate only inspects the value, so both are safe to call concurrently.
//
// The usual sequence in main:
//
//	cfg, err := config.Load(os.Args[1:], os.Getenv)
//	if errors.Is(err, config.ErrHelp) { fmt.Print(config.Usage()); return nil }
//	if err == nil { err = cfg.Validate() } // every problem at once
//	log.Info("starting", zap.Object("config", cfg)) // secrets redacted
//
// Fields tagged redact:"true" are secrets. Config's String, Format (every fmt
// verb), MarshalLogObject (zap) and MarshalJSON all print Redacted(), so a new
// secret field is protected by adding the tag.
package config
