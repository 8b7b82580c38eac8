package sidecar_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgoutpost/pgoutpost/internal/pgtest"
	"github.com/pgoutpost/pgoutpost/sidecar"
)

// TestHTTPServerDropsSilentClients: the sidecar's own HTTP server (Listen)
// answers, and closes a connection on which a client sends nothing, rather
// than holding it for ever.
func TestHTTPServerDropsSilentClients(t *testing.T) {
	e := newE2E(t)
	r := e.start(t, t, func(o *sidecar.Options) { o.Listen = "127.0.0.1:0" })
	addr := r.sc.Addr(testCtx(t, time.Minute))
	if addr == nil {
		t.Fatal("the HTTP server did not start")
	}
	// It answers (/healthz turns 200 once the run loop runs).
	pgtest.Eventually(t, "/healthz to answer 200", func() bool {
		resp, err := http.Get("http://" + addr.String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A request started and never finished: the server's read-header
	// timeout (10 s) ends it. The deadline only keeps a broken server from
	// hanging the test.
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still holds a silent connection after %s", time.Since(began).Round(time.Second))
	}
	// Closed, or answered with an error status (Go's server may send 408).
	if err == nil && !strings.Contains(line, "408") {
		t.Errorf("a silent client got %q", line)
	}
	t.Logf("silent connection ended after %s (%q, %v)", time.Since(began).Round(100*time.Millisecond), line, err)
}
