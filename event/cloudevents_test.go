package event

import (
	"encoding/json"
	"testing"
	"time"
)

func TestCloudEventHeaders(t *testing.T) {
	at := time.Date(2026, 11, 24, 15, 37, 1, 123456000, time.FixedZone("CET", 3600))
	ev := Event{V: Version, Env: "staging", Table: "public.shop_outcome", Op: OpUpdate,
		PK: json.RawMessage(`{"id": 42}`), QueueID: "0192f3b4-7c1e-7a4e-9a51-3f0c2d9e8b11", CommittedAt: at}
	h, err := CloudEventHeaders(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ce-specversion":     "1.0",
		"ce-id":              "0192f3b4-7c1e-7a4e-9a51-3f0c2d9e8b11",
		"ce-source":          "/pgoutpost/staging",
		"ce-type":            "pgoutpost.denormalize.update",
		"ce-time":            "2026-11-24T14:37:01.123456Z",
		"ce-subject":         "public.shop_outcome/42",
		"ce-datacontenttype": "application/json",
		"content-type":       "application/json",
	}
	if len(h) != len(want) {
		t.Errorf("headers %v, want %d", h, len(want))
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}

	// A composite key keeps the pk object's order; a string value that
	// holds what a header must not is percent-encoded, once.
	ev.Table = `app.my "table"`
	ev.PK = json.RawMessage(`{"code": "50% off é", "n": 7, "at": null}`)
	h, err = CloudEventHeaders(ev)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h["ce-subject"], "app.my%20%22table%22/50%25%20off%20%C3%A9/7/null"; got != want {
		t.Errorf("ce-subject = %q, want %q", got, want)
	}

	ev.PK = json.RawMessage(`[1]`)
	if _, err := CloudEventHeaders(ev); err == nil {
		t.Error("a pk that is no object gave a subject")
	}
}
