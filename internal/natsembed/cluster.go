package natsembed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of in-process servers on loopback, each
// with its own store directory. Every route between two nodes runs through
// a proxy of the Cluster's own (one per direction of each pair), so that
// Partition can cut a node off from the others while it and its clients
// keep running: that is what a network partition looks like to JetStream.
// Closing a node's route connections from inside the server would not do:
// the server dials them again at once.
type Cluster struct {
	Nodes []*Server
	dir   string
	own   bool
	links map[[2]int]*link // from, to
}

// StartCluster starts n nodes (3 for a JetStream quorum that survives the
// loss of one) with stores under dir (a new temporary directory, removed by
// Shutdown, when empty) and waits until JetStream has a meta leader and
// every node is a peer.
func StartCluster(dir string, n int) (*Cluster, error) {
	c := &Cluster{dir: dir, links: map[[2]int]*link{}}
	if dir == "" {
		d, err := os.MkdirTemp("", "pgoutpost-nats-cluster-")
		if err != nil {
			return nil, err
		}
		c.dir, c.own = d, true
	}
	// Gossip tells each node where the others listen for routes (their
	// advertised address) and it would dial them there directly, around
	// the proxies. They advertise an address where nothing listens, so
	// such a dial fails once and is not retried: the configured routes,
	// through the proxies, are the only ones.
	nowhere, err := closedAddr()
	if err != nil {
		return nil, c.fail(err)
	}
	c.Nodes = make([]*Server, n)
	for i := range n {
		c.Nodes[i] = &Server{storeDir: filepath.Join(c.dir, fmt.Sprintf("n%d", i+1)), opts: &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name:      "pgoutpost",
				Host:      "127.0.0.1",
				Port:      server.RANDOM_PORT,
				Advertise: nowhere,
				// One connection per pair of nodes keeps the proxies simple.
				PoolSize: -1,
			},
		}}
		c.Nodes[i].opts.StoreDir = c.Nodes[i].storeDir
	}
	for i := range n {
		for j := range n {
			if i == j {
				continue
			}
			l, err := newLink(c.Nodes[j])
			if err != nil {
				return nil, c.fail(err)
			}
			c.links[[2]int{i, j}] = l
			c.Nodes[i].opts.Routes = append(c.Nodes[i].opts.Routes, &url.URL{Scheme: "nats-route", Host: l.addr()})
		}
	}
	for _, s := range c.Nodes {
		if err := s.start(); err != nil {
			return nil, c.fail(err)
		}
	}
	if err := c.WaitFormed(30 * time.Second); err != nil {
		return nil, c.fail(err)
	}
	return c, nil
}

func (c *Cluster) fail(err error) error {
	c.Shutdown()
	return fmt.Errorf("start nats cluster: %w", err)
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// URLs is every node's client URL, comma-separated, as nats.Connect takes
// them.
func (c *Cluster) URLs() string {
	var urls []string
	for _, s := range c.Nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port))
	}
	return strings.Join(urls, ",")
}

// WaitFormed waits until a running node is the JetStream meta leader and
// sees every running node as a peer.
func (c *Cluster) WaitFormed(timeout time.Duration) error {
	running := 0
	for _, s := range c.Nodes {
		if s.Running() {
			running++
		}
	}
	return waitFor(timeout, func() error {
		for _, s := range c.Nodes {
			if s.Running() && s.JetStreamIsLeader() {
				if peers := len(s.JetStreamClusterPeers()); peers < running {
					return fmt.Errorf("meta leader %s sees %d of %d nodes", s.Name(), peers, running)
				}
				return nil
			}
		}
		return errors.New("no JetStream meta leader")
	})
}

// StreamLeader returns the index of the node leading stream (of the
// default account), or -1 when no running node does.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.Nodes {
		if s.Server != nil && s.Running() && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until a node other than those in not leads stream
// and returns its index.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration, not ...int) (int, error) {
	leader := -1
	err := waitFor(timeout, func() error {
		leader = c.StreamLeader(stream)
		for _, n := range not {
			if leader == n {
				return fmt.Errorf("node %d still leads stream %s", n, stream)
			}
		}
		if leader < 0 {
			return fmt.Errorf("stream %s has no leader", stream)
		}
		return nil
	})
	return leader, err
}

// StreamLastSeq returns the last sequence of stream in node i's own
// replica (its store, whether or not it leads), and false when node i does
// not hold the stream or is not running.
func (c *Cluster) StreamLastSeq(i int, stream string) (uint64, bool) {
	s := c.Nodes[i]
	if s.Server == nil || !s.Running() {
		return 0, false
	}
	acc, err := s.JszAccount(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true})
	if err != nil {
		return 0, false
	}
	for _, st := range acc.Streams {
		if st.Name == stream {
			return st.State.LastSeq, true
		}
	}
	return 0, false
}

// Stop shuts node i down, keeping its store; Restart brings it back.
func (c *Cluster) Stop(i int) { c.Nodes[i].Stop() }

// Restart starts the stopped node i again with its ports and store.
func (c *Cluster) Restart(i int) error { return c.Nodes[i].Restart() }

// Partition cuts node i off from every other node: its route connections
// are closed and cannot be made again until Heal. Its clients stay
// connected to it.
func (c *Cluster) Partition(i int) {
	for k, l := range c.links {
		if k[0] == i || k[1] == i {
			l.cut(true)
		}
	}
}

// Heal lets node i's routes connect again.
func (c *Cluster) Heal(i int) {
	for k, l := range c.links {
		if k[0] == i || k[1] == i {
			l.cut(false)
		}
	}
}

// Shutdown stops every node and proxy and removes a store directory the
// Cluster created.
func (c *Cluster) Shutdown() {
	for _, l := range c.links {
		l.close()
	}
	for _, s := range c.Nodes {
		if s != nil && s.Server != nil && s.Running() {
			s.Stop()
		}
	}
	if c.own {
		_ = os.RemoveAll(c.dir)
	}
}

func waitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// link is a TCP proxy in front of one node's route listener, used by one
// other node's route to it.
type link struct {
	ln    net.Listener
	to    *Server
	mu    sync.Mutex
	isCut bool
	conns map[net.Conn]struct{}
}

func newLink(to *Server) (*link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &link{ln: ln, to: to, conns: map[net.Conn]struct{}{}}
	go l.serve()
	return l, nil
}

func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.forward(in)
	}
}

// target is where the node's route listener is, "" while it is stopped.
func (l *link) target() string {
	l.to.mu.Lock()
	defer l.to.mu.Unlock()
	if l.to.Server == nil || !l.to.Running() {
		return ""
	}
	if a := l.to.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (l *link) forward(in net.Conn) {
	addr := l.target()
	if addr == "" {
		_ = in.Close()
		return
	}
	out, err := net.Dial("tcp", addr)
	if err != nil {
		_ = in.Close()
		return
	}
	l.mu.Lock()
	if l.isCut {
		l.mu.Unlock()
		_ = in.Close()
		_ = out.Close()
		return
	}
	l.conns[in], l.conns[out] = struct{}{}, struct{}{}
	l.mu.Unlock()
	done := func() {
		_ = in.Close()
		_ = out.Close()
		l.mu.Lock()
		delete(l.conns, in)
		delete(l.conns, out)
		l.mu.Unlock()
	}
	go func() {
		_, _ = io.Copy(out, in)
		done()
	}()
	_, _ = io.Copy(in, out)
	done()
}

// cut closes the link's connections and refuses new ones (true), or lets
// them through again (false).
func (l *link) cut(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.isCut = on
	if on {
		for c := range l.conns {
			_ = c.Close()
		}
	}
}

func (l *link) close() {
	_ = l.ln.Close()
	l.cut(true)
}
