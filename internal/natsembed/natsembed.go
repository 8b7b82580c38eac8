package natsembed

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an in-process NATS server with JetStream enabled.
type Server struct {
	*server.Server
	mu       sync.Mutex // guards Server across Stop and Restart, for Cluster's proxies
	opts     *server.Options
	storeDir string
	ownDir   bool
}

// Start starts a server listening on a free loopback port with JetStream storing
// in storeDir (a new temporary directory, removed by Shutdown, when empty).
func Start(storeDir string) (*Server, error) {
	own := false
	if storeDir == "" {
		d, err := os.MkdirTemp("", "pgoutpost-nats-")
		if err != nil {
			return nil, err
		}
		storeDir, own = d, true
	}
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	}
	s := &Server{opts: opts, storeDir: storeDir, ownDir: own}
	if err := s.start(); err != nil {
		if own {
			_ = os.RemoveAll(storeDir)
		}
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	// The server keeps the Options it is given: it gets a copy, as the
	// ports are written back into s.opts below.
	o := *s.opts
	ns, err := server.NewServer(&o)
	if err != nil {
		return fmt.Errorf("configure nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return fmt.Errorf("nats server did not become ready in 10s")
	}
	s.mu.Lock()
	s.Server = ns
	s.mu.Unlock()
	// Restart must come back on the same port so clients can reconnect.
	s.opts.Port = ns.Addr().(*net.TCPAddr).Port
	if a := ns.ClusterAddr(); a != nil {
		s.opts.Cluster.Port = a.Port
	}
	return nil
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.ClientURL() }

// Stop shuts the server down, keeping its store, so Restart can bring it back
// (to simulate a NATS outage).
func (s *Server) Stop() {
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
}

// Restart starts a stopped server again on the same port with the same store.
func (s *Server) Restart() error { return s.start() }

// Shutdown stops the server and removes a store directory it created.
func (s *Server) Shutdown() {
	if s.Server != nil && s.Server.Running() {
		s.Stop()
	}
	if s.ownDir {
		_ = os.RemoveAll(s.storeDir)
	}
}
