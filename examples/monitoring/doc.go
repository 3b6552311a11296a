// Package monitoring holds no code: it is the Grafana dashboard
// (grafana-dashboard.json) and the Prometheus alerting rules (alerts.yml)
// for the proxy's /metrics, and the test that keeps them honest.
//
// The test parses both files and checks every PromQL expression in them
// against the proxy's metric contract (names, types, labels and label
// values), and that every panel has a query and every alert its for,
// severity and annotations. It needs no Prometheus or Grafana and starts no
// goroutines or processes; `promtool check rules alerts.yml` is the extra,
// manual check (README.md).
package monitoring
