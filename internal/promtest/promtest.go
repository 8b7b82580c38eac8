// Package promtest lists the metric names a constructor registers, for the
// tests that check a dashboard, the docs or a demo against them.
package promtest

import (
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
)

// Names returns the names of the metrics register registers, read from their
// descriptions (a fresh registry would gather only the series that have
// values).
func Names(register func(prometheus.Registerer) error) ([]string, error) {
	rec := &describer{}
	if err := register(rec); err != nil {
		return nil, err
	}
	return rec.names, nil
}

// describer is a prometheus.Registerer that records the names of what is
// registered on it.
type describer struct{ names []string }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names = append(d.names, m[1])
		}
	}
	return nil
}

func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describer) Unregister(prometheus.Collector) bool { return false }
