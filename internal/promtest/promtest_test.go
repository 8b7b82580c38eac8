package promtest

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNames(t *testing.T) {
	names, err := Names(func(r prometheus.Registerer) error {
		r.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"}),
			prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "ns", Name: "b", Help: "b"}, []string{"l"}))
		return nil
	})
	if err != nil || !slices.Equal(names, []string{"a_total", "ns_b"}) {
		t.Errorf("Names = %v, %v", names, err)
	}
}
