package replication

import (
	"slices"
	"strings"
	"testing"
)

func TestNewNames(t *testing.T) {
	n, err := NewNames("", "", "Staging-EU")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(n.PublicationNames(), " "); got != "pgoutpost_system pgoutpost_delete pgoutpost_queue" {
		t.Errorf("publications %s", got)
	}
	if got := strings.Join(n.SubscriptionNames(), " "); got != "pgoutpost_staging_eu" {
		t.Errorf("subscriptions %s", got)
	}
	s, err := NewNames("pgoutpost", "lims", "qa")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(append(s.PublicationNames(), s.SubscriptionNames()...), " "); got != "lims_pub lims_upsert_pub lims_queue_pub lims_sub lims_upsert_sub" {
		t.Errorf("seed names %s", got)
	}
	// The queue joins the subscription of the delete models, without a copy.
	if up := s.Subs[1]; !slices.Equal(up.Publications, []string{"lims_queue_pub", "lims_upsert_pub"}) || !slices.Equal(up.NoCopy, []string{"lims_queue_pub"}) ||
		!up.copies("lims_upsert_pub") || up.copies("lims_queue_pub") || !s.Subs[0].copies("lims_pub") {
		t.Errorf("seed subscriptions %+v", s.Subs)
	}
	if n.Legacy != (LegacyNames{Data: "pgoutpost_staging_eu_data", Queue: "pgoutpost_staging_eu_queue"}) || s.Legacy != (LegacyNames{Queue: "lims_qa_queue_sub"}) {
		t.Errorf("legacy names %+v, %+v", n.Legacy, s.Legacy)
	}
	if _, err := NewNames(strings.Repeat("p", 60), "", "qa"); err == nil {
		t.Error("a name over 63 bytes was accepted")
	}
	if _, err := NewNames("Bad-Prefix", "", "qa"); err == nil {
		t.Error("a prefix that is not a valid slot name was accepted")
	}
}
