package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutpost/pgoutpost/event"
	"github.com/pgoutpost/pgoutpost/internal/backoff"
	"github.com/pgoutpost/pgoutpost/internal/connstr"
)

// Defaults applied by Connect to zero Options fields.
const (
	DefaultURL    = nats.DefaultURL
	DefaultStream = "PGOUTPOST"
	// DefaultDuplicateWindow covers a sidecar that crashed after JetStream
	// acknowledged an event and before it dequeued the entry, and then
	// restarted (Kubernetes' crash-loop back-off alone grows to five
	// minutes) and published the entry again: within the window the stream
	// drops the second copy by its Nats-Msg-Id.
	DefaultDuplicateWindow = 10 * time.Minute
	// DefaultClusterReplicas is the replicas of a created stream when the
	// server is part of a cluster: the stream keeps taking events while one
	// of its servers is down.
	DefaultClusterReplicas = 3
	DefaultMaxInFlight     = 256
	DefaultStorage         = "file"
	DefaultAckTimeout      = 5 * time.Second
	DefaultRetryMin        = 100 * time.Millisecond
	DefaultRetryMax        = 5 * time.Second
	DefaultReconnectWait   = time.Second
	DefaultClientName      = "pgoutpost"
)

// Options configure the NATS publisher. The config package's nats: section
// maps onto it; zero fields take the Default* constants.
type Options struct {
	URL             string // one URL or a comma-separated list
	CredentialsFile string // NATS .creds file (user JWT and seed)
	Token           string // auth token (never logged)
	TLS             TLSOptions

	Env           string // this environment, the second subject token; required
	SubjectPrefix string // event.DefaultPrefix when ""

	Stream string // DefaultStream when ""
	// CreateStream creates the stream when missing and adds our subjects and
	// duplicate window to it when it exists. When false, Connect only checks
	// the stream and reports everything that does not fit. (sidecar.yaml's
	// create_stream defaults to true; the zero Options only checks.)
	CreateStream bool
	Retention    string // "limits" (default), "interest" or "workqueue"; for a created stream
	// Replicas of a created stream; when 0, DefaultClusterReplicas if the
	// server is part of a cluster, else 1. With CreateStream, a set value
	// also changes an existing stream's replicas.
	Replicas        int
	Placement       Placement     // for a created stream; empty lets JetStream choose
	Storage         string        // "file" (default) or "memory"; for a created stream
	MaxAge          time.Duration // for a created stream; 0 keeps messages forever
	MaxBytes        int64         // for a created stream; 0 sets no limit
	DuplicateWindow time.Duration // DefaultDuplicateWindow when 0

	MaxInFlight   int           // publishes waiting for their ack, over all calls
	AckTimeout    time.Duration // a publish without an ack by then is retried
	RetryMin      time.Duration // first backoff after a failed round
	RetryMax      time.Duration // backoff ceiling
	ReconnectWait time.Duration // between reconnect attempts
	ClientName    string

	Logger *slog.Logger // slog.Default() when nil
	// ObserveAck, when set, is called with the time from send to ack of each
	// message (for a latency histogram). It must not block.
	ObserveAck func(time.Duration)
}

// Placement picks the servers of a created stream: those of a cluster,
// with all of the tags.
type Placement struct {
	Cluster string
	Tags    []string
}

// TLSOptions are the TLS files for the NATS connection; empty means unused.
type TLSOptions struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

func (o *Options) setDefaults() {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = event.DefaultPrefix
	}
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.Retention == "" {
		o.Retention = "limits"
	}
	if o.Storage == "" {
		o.Storage = DefaultStorage
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(DefaultRetryMax, o.RetryMin)
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = DefaultReconnectWait
	}
	if o.ClientName == "" {
		o.ClientName = DefaultClientName
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Stats are the publisher's counters and gauges, for metrics.
type Stats struct {
	Acked       uint64 // messages stored by JetStream (first time)
	Duplicates  uint64 // messages JetStream dropped as already stored (success too)
	Failed      uint64 // publish attempts that failed and were retried
	Outages     uint64 // times publishing went from working to failing
	Resent      uint64 // stored messages sent again because they overtook a failed one
	InFlight    int    // messages sent and waiting for their ack
	Connected   bool
	FailingFor  time.Duration // how long publishing has been failing, 0 when it works
	LastFailure string        // the last failure's error, "" when publishing works
}

// NATS publishes events to a JetStream stream. Create it with Connect.
type NATS struct {
	opts      Options
	url       string // redacted, for messages
	nc        *nats.Conn
	js        jetstream.JetStream
	envPrefix string // <prefix>.<env>.denormalize
	submit    chan []*item
	pumpDone  chan struct{}
	inflight  atomic.Int64
	subjects  sync.Map // table → subject

	closing   chan struct{}
	closeOnce sync.Once
	warnings  []string // about the stream, found by Connect

	acked, dups, failed, outages, resent atomic.Uint64

	mu          sync.Mutex
	failingErr  error // set while publishing fails
	failingFrom time.Time
	warnedAt    time.Time // of the last warning of the current outage
}

// Connect connects to NATS, makes sure the stream fits (creating or updating
// it when opts.CreateStream) and returns the publisher. Errors say what is
// wrong: an unreachable URL (without credentials in it), a credentials or TLS
// file that cannot be used, a stream that is missing or does not fit.
func Connect(ctx context.Context, opts Options) (*NATS, error) {
	opts.setDefaults()
	envPrefix, err := event.EnvSubject(opts.SubjectPrefix, opts.Env)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if _, err := retention(opts.Retention); err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if _, err := storage(opts.Storage); err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	p := &NATS{
		opts:      opts,
		url:       connstr.RedactURLs(opts.URL),
		envPrefix: envPrefix,
		submit:    make(chan []*item),
		pumpDone:  make(chan struct{}),
		closing:   make(chan struct{}),
	}
	copts, err := p.natsOptions()
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", p.url, err)
	}
	nc, err := nats.Connect(opts.URL, copts...)
	if errors.Is(err, nats.ErrNoServers) {
		return nil, fmt.Errorf("connect to nats at %s: server unreachable: %w", p.url, err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", p.url, err)
	}
	p.nc = nc
	p.js, err = jetstream.New(nc,
		// The pipeline bounds the messages in flight; jetstream's limit is
		// set above it so that it never stalls a publish.
		jetstream.WithPublishAsyncMaxPending(2*opts.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(opts.AckTimeout),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open jetstream on %s: %w", p.url, err)
	}
	if err := p.ensureStream(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	for _, w := range p.warnings {
		opts.Logger.Warn("nats stream: " + w)
	}
	go p.pump()
	return p, nil
}

func (p *NATS) natsOptions() ([]nats.Option, error) {
	o := p.opts
	log := o.Logger
	copts := []nats.Option{
		nats.Name(o.ClientName),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		// No reconnect buffer: a publish made while disconnected fails at
		// once instead of being sent after reconnecting, behind the retries
		// of the publishes that failed with the disconnect. That ordering is
		// what keeps entry N of a row ahead of entry N+1 in the stream.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "url", p.url, "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats async error", "url", p.url, "subject", sub.Subject, "err", err)
			} else {
				log.Warn("nats async error", "url", p.url, "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", connstr.RedactURLs(nc.ConnectedUrl()))
		}),
	}
	if o.CredentialsFile != "" {
		if err := checkCredentials(o.CredentialsFile); err != nil {
			return nil, err
		}
		copts = append(copts, nats.UserCredentials(o.CredentialsFile))
	}
	if o.Token != "" {
		copts = append(copts, nats.Token(o.Token))
	}
	if o.TLS.CAFile != "" {
		if err := readable("TLS CA file", o.TLS.CAFile); err != nil {
			return nil, err
		}
		copts = append(copts, nats.RootCAs(o.TLS.CAFile))
	}
	if o.TLS.CertFile != "" || o.TLS.KeyFile != "" {
		if o.TLS.CertFile == "" || o.TLS.KeyFile == "" {
			return nil, errors.New("TLS needs both a cert file and a key file")
		}
		if err := readable("TLS cert file", o.TLS.CertFile); err != nil {
			return nil, err
		}
		if err := readable("TLS key file", o.TLS.KeyFile); err != nil {
			return nil, err
		}
		copts = append(copts, nats.ClientCert(o.TLS.CertFile, o.TLS.KeyFile))
	}
	return copts, nil
}

func readable(what, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	return f.Close()
}

// checkCredentials catches the common mistakes (wrong path, a file that is
// not a .creds file) with a message naming the file, before nats.go reports
// them as a generic authorization failure.
func checkCredentials(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read nats credentials file: %w", err)
	}
	s := string(b)
	if !strings.Contains(s, "BEGIN NATS USER JWT") || !strings.Contains(s, "BEGIN USER NKEY SEED") {
		return fmt.Errorf("nats credentials file %s: no user JWT and nkey seed blocks (want a .creds file from nsc)", path)
	}
	return nil
}

func retention(s string) (jetstream.RetentionPolicy, error) {
	switch s {
	case "limits":
		return jetstream.LimitsPolicy, nil
	case "interest":
		return jetstream.InterestPolicy, nil
	case "workqueue":
		return jetstream.WorkQueuePolicy, nil
	}
	return 0, fmt.Errorf("stream retention %q: want limits, interest or workqueue", s)
}

func storage(s string) (jetstream.StorageType, error) {
	switch s {
	case "file":
		return jetstream.FileStorage, nil
	case "memory":
		return jetstream.MemoryStorage, nil
	}
	return 0, fmt.Errorf("stream storage %q: want file or memory", s)
}

// replicas is the replica count a created stream gets, and whether it is
// the default rather than Options.Replicas.
func (p *NATS) replicas() (n int, defaulted bool) {
	switch {
	case p.opts.Replicas > 0:
		return p.opts.Replicas, false
	case p.nc.ConnectedClusterName() != "":
		return DefaultClusterReplicas, true
	}
	return 1, true
}

// ensureStream creates or checks the stream, see Options.CreateStream, and
// sets p.warnings.
func (p *NATS) ensureStream(ctx context.Context) error {
	o := p.opts
	want := p.envPrefix + ".>"
	cluster := p.nc.ConnectedClusterName()
	replicas, defaulted := p.replicas()
	st, err := p.js.Stream(ctx, o.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound) && o.CreateStream:
		ret, _ := retention(o.Retention)
		store, _ := storage(o.Storage)
		cfg := jetstream.StreamConfig{
			Name:        o.Stream,
			Description: "pgoutpost denormalize events",
			Subjects:    []string{want},
			Retention:   ret,
			Storage:     store,
			Replicas:    replicas,
			MaxAge:      o.MaxAge,
			MaxBytes:    o.MaxBytes,
			Duplicates:  o.DuplicateWindow,
		}
		if o.Placement.Cluster != "" || len(o.Placement.Tags) > 0 {
			cfg.Placement = &jetstream.Placement{Cluster: o.Placement.Cluster, Tags: o.Placement.Tags}
		}
		st, err := p.js.CreateStream(ctx, cfg)
		if err != nil && defaulted && replicas > 1 {
			return fmt.Errorf("create stream %s for %s with %d replicas (the default on a cluster) on %s: %w; set nats.replicas to what the cluster can hold",
				o.Stream, want, replicas, p.url, err)
		}
		if err != nil {
			return fmt.Errorf("create stream %s for %s on %s: %w", o.Stream, want, p.url, err)
		}
		p.warnings = StreamWarnings(cluster, st.CachedInfo().Config, o.DuplicateWindow)
		o.Logger.Info("nats stream created", "stream", o.Stream, "subjects", want, "replicas", replicas,
			"storage", o.Storage, "duplicate_window", o.DuplicateWindow)
		return nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("%w: stream %s does not exist on %s (create_stream is off): create it with subjects %q and a duplicate window",
			ErrStreamConfig, o.Stream, p.url, want)
	case err != nil:
		return fmt.Errorf("look up stream %s on %s: %w", o.Stream, p.url, err)
	}
	cfg := st.CachedInfo().Config
	covered := false
	for _, s := range cfg.Subjects {
		if SubjectCovers(s, want) {
			covered = true
			break
		}
	}
	if !o.CreateStream {
		var problems []error
		if !covered {
			problems = append(problems, fmt.Errorf("its subjects %q do not cover %q", cfg.Subjects, want))
		}
		if cfg.Duplicates <= 0 {
			problems = append(problems, errors.New("its duplicate window is 0, so a republish after a crash would be delivered twice"))
		}
		if len(problems) > 0 {
			return fmt.Errorf("%w: stream %s on %s does not fit (create_stream is off): %w",
				ErrStreamConfig, o.Stream, p.url, errors.Join(problems...))
		}
		p.warnings = StreamWarnings(cluster, cfg, o.DuplicateWindow)
		return nil
	}
	// An existing stream keeps its replicas unless they are configured:
	// the default must not scale a stream someone sized on purpose.
	rescale := !defaulted && cfg.Replicas != replicas
	if covered && cfg.Duplicates >= o.DuplicateWindow && !rescale {
		p.warnings = StreamWarnings(cluster, cfg, o.DuplicateWindow)
		return nil
	}
	if !covered {
		cfg.Subjects = append(cfg.Subjects, want)
	}
	cfg.Duplicates = max(cfg.Duplicates, o.DuplicateWindow)
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		// JetStream refuses a window longer than the stream keeps messages:
		// an existing stream's age limit caps it (a wider window would
		// drop nothing it does not already drop).
		o.Logger.Warn("nats stream keeps messages for less than the duplicate window; the window is capped at its max age",
			"stream", o.Stream, "max_age", cfg.MaxAge, "duplicate_window", o.DuplicateWindow)
		cfg.Duplicates = cfg.MaxAge
	}
	if rescale {
		cfg.Replicas = replicas
	}
	st2, err := p.js.UpdateStream(ctx, cfg)
	if err != nil {
		return fmt.Errorf("update stream %s to take %s: %w", o.Stream, want, err)
	}
	p.warnings = StreamWarnings(cluster, st2.CachedInfo().Config, o.DuplicateWindow)
	o.Logger.Info("nats stream updated", "stream", o.Stream, "subjects", cfg.Subjects, "duplicate_window", cfg.Duplicates,
		"replicas", cfg.Replicas)
	return nil
}

// StreamWarnings names what in a stream's configuration risks events on a
// server of the NATS cluster named cluster ("" for a lone server): one
// replica on a cluster, memory storage, a duplicate window shorter than the
// configured window (an existing stream's max age caps it). It is the one
// judgement that Connect logs, /readyz shows and the status command reports.
func StreamWarnings(cluster string, cfg jetstream.StreamConfig, window time.Duration) []string {
	var w []string
	if window > 0 && cfg.Duplicates < window {
		why := ""
		if cfg.MaxAge > 0 && cfg.Duplicates >= cfg.MaxAge {
			why = fmt.Sprintf(" (its max_age %s caps the window)", cfg.MaxAge)
		}
		w = append(w, fmt.Sprintf("stream %s drops republished events as duplicates for %s only, less than nats.duplicate_window %s%s: an event published again after a crash or an outage longer than that is stored twice",
			cfg.Name, cfg.Duplicates, window, why))
	}
	if cluster != "" && cfg.Replicas <= 1 {
		w = append(w, fmt.Sprintf("stream %s has a single replica on NATS cluster %q: while its server is down no event is published, and losing that server's disk loses the stream; give it %d (nats.replicas, or nats stream edit %s --replicas %d)",
			cfg.Name, cluster, DefaultClusterReplicas, cfg.Name, DefaultClusterReplicas))
	}
	if cfg.Storage == jetstream.MemoryStorage {
		w = append(w, fmt.Sprintf("stream %s keeps its messages in memory: a restart of its servers loses the events not yet consumed", cfg.Name))
	}
	return w
}

// Warnings returns what StreamWarnings found about the stream when the
// publisher connected; nil when nothing.
func (p *NATS) Warnings() []string { return p.warnings }

// InspectStream connects with opts (only the connection and stream fields
// are used), reads the stream and returns StreamWarnings about it, for the
// status command. A stream that does not exist is an error wrapping
// ErrStreamConfig.
func InspectStream(ctx context.Context, opts Options) ([]string, error) {
	opts.setDefaults()
	p := &NATS{opts: opts, url: connstr.RedactURLs(opts.URL)}
	copts, err := p.natsOptions()
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", p.url, err)
	}
	nc, err := nats.Connect(opts.URL, append(copts, nats.MaxReconnects(0))...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", p.url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open jetstream on %s: %w", p.url, err)
	}
	st, err := js.Stream(ctx, opts.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: stream %s does not exist on %s", ErrStreamConfig, opts.Stream, p.url)
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s on %s: %w", opts.Stream, p.url, err)
	}
	return StreamWarnings(nc.ConnectedClusterName(), st.CachedInfo().Config, opts.DuplicateWindow), nil
}

// SubjectCovers reports whether every subject matching pattern also matches
// filter (both may hold the wildcards * and >).
func SubjectCovers(filter, pattern string) bool {
	f := strings.Split(filter, ".")
	s := strings.Split(pattern, ".")
	for i, ft := range f {
		if ft == ">" {
			return i < len(s)
		}
		if i >= len(s) {
			return false
		}
		switch {
		case s[i] == ">":
			return false
		case ft == "*":
		case ft != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

// Publish implements Sink: PublishAsync, then Wait.
func (p *NATS) Publish(ctx context.Context, msgs []Message) (int, error) {
	return p.PublishAsync(ctx, msgs).Wait(ctx)
}

// PublishAsync implements Sink. The messages join one ordered pipeline behind
// everything submitted before; at most Options.MaxInFlight wait for their ack.
// When a publish fails (NATS down, an ack timeout), the pipeline stops sending,
// lets what is in flight settle, waits with a growing backoff and sends again,
// in the original order, every message not acked, before anything newer. A
// duplicate ack (stored before, e.g. by the run before a crash) counts as done.
//
// A message in flight behind one that fails can still be stored (the stream
// came back in between) and would then stand before it. Such a message is
// sent again behind the failed one under the id "<id>~<n>" (ResentSuffix),
// and its batch is done only when that copy is stored: the stream may then
// hold an event twice, and the last copy of every event comes after the last
// copy of every event published before it.
//
// Messages that cannot be encoded (or exceed the server's max payload) fail
// at once: the batch is cut before the first of them, and its result names it
// with an error wrapping ErrPermanent. Cancelling ctx drops the batch's
// unsent messages; use it for shutdown, as later batches may then overtake
// them.
func (p *NATS) PublishAsync(ctx context.Context, msgs []Message) *Pending {
	b := newPending(len(msgs))
	out := make([]*nats.Msg, 0, len(msgs))
	maxPayload := p.nc.MaxPayload()
	for i, m := range msgs {
		nm, err := p.natsMsg(m, maxPayload)
		if err != nil {
			b.cut(i, &PublishError{Index: i, MsgID: m.ID, Err: err})
			break
		}
		out = append(out, nm)
	}
	if len(out) == 0 {
		b.finish(nil)
		return b
	}
	items := make([]*item, len(out))
	for i, nm := range out {
		items[i] = &item{msg: nm, batch: b, idx: i, id: msgs[i].ID, ctx: ctx}
	}
	select {
	case p.submit <- items:
	case <-p.closing:
		b.finish(&PublishError{Index: 0, MsgID: msgs[0].ID, Err: ErrClosed})
	}
	return b
}

func (p *NATS) natsMsg(m Message, maxPayload int64) (*nats.Msg, error) {
	if m.ID == "" {
		return nil, fmt.Errorf("%w: message has no id", ErrPermanent)
	}
	body, err := event.Encode(m.Event)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	if m.Event.Env != p.opts.Env {
		return nil, fmt.Errorf("%w: event of env %q on a publisher of env %q", ErrPermanent, m.Event.Env, p.opts.Env)
	}
	subject, ok := p.subjects.Load(m.Event.Table)
	if !ok {
		// Encode has checked that Table is schema.table.
		schema, name, _ := strings.Cut(m.Event.Table, ".")
		subject, _ = p.subjects.LoadOrStore(m.Event.Table, p.envPrefix+"."+event.Token(schema)+"."+event.Token(name))
	}
	ce, err := event.CloudEventHeaders(m.Event)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	h := make(nats.Header, 3+len(ce))
	h[event.HeaderMsgID] = []string{m.ID}
	h[event.HeaderTable] = []string{m.Event.Table}
	h[event.HeaderOp] = []string{string(m.Event.Op)}
	for k, v := range ce {
		h[k] = []string{v}
	}
	nm := &nats.Msg{Subject: subject.(string), Data: body, Header: h}
	// "NATS/1.0\r\n", a "Key: value\r\n" line per header, "\r\n".
	size := len(body) + 10 + 2
	for k, v := range h {
		size += len(k) + len(v[0]) + 4
	}
	if maxPayload > 0 && int64(size) > maxPayload {
		return nil, fmt.Errorf("%w: message of %d bytes exceeds the server's max payload of %d", ErrPermanent, size, maxPayload)
	}
	return nm, nil
}

// noRetry turns off jetstream's own resend of a message that met no
// responders (JetStream not ready yet after a restart, stream deleted): it
// resends that one message alone, after a delay, behind the ones sent since,
// which would break their order. The pipeline retries it, in order, instead.
var noRetry = jetstream.WithRetryAttempts(0)

// item is one message in the pipeline.
type item struct {
	msg    *nats.Msg
	batch  *Pending
	idx    int
	id     string
	ctx    context.Context
	fut    jetstream.PubAckFuture
	at     time.Time
	copies int // times it was stored and must be sent again (see resend)
}

// ResentSuffix separates a message id from the number of a copy that was
// sent again: "<id>~1" is the first such copy. See PublishAsync.
const ResentSuffix = "~"

// resend readies it to be sent again after it was stored ahead of an
// earlier message that failed: a new message (the client may still hold
// the sent one) under the id <id>~<n>, which JetStream's de-duplication lets
// through.
func (it *item) resend() {
	it.copies++
	h := make(nats.Header, len(it.msg.Header))
	for k, v := range it.msg.Header {
		h[k] = append([]string(nil), v...)
	}
	h.Set(event.HeaderMsgID, it.id+ResentSuffix+strconv.Itoa(it.copies))
	it.msg = &nats.Msg{Subject: it.msg.Subject, Data: it.msg.Data, Header: h}
	it.fut = nil
}

// pump owns the pipeline: it sends queued items in order, takes acks in send
// order, and after a failure retries, see PublishAsync.
func (p *NATS) pump() {
	defer close(p.pumpDone)
	var (
		queue    []*item // to send, in order
		inflight []*item // sent, in send order
		retry    []*item // failed, in send order, to go before queue
		paused   bool
		lastErr  error
		tries    int // failed rounds since the last ack, which set the wait
		timer    *time.Timer
		timerC   <-chan time.Time
	)
	fail := func(it *item, err error) {
		p.failed.Add(1)
		retry = append(retry, it)
		lastErr = err
		paused = true
	}
	acked := func(ack *jetstream.PubAck) {
		it := inflight[0]
		inflight = inflight[1:]
		if len(retry) > 0 {
			// An earlier message failed and this later one was stored (the
			// stream came back while both were in flight): it now stands
			// before the failed one. It goes again behind it, under a new
			// id, so that the newest copy of every message keeps the
			// publish order; its batch waits for that copy.
			p.resent.Add(1)
			it.resend()
			retry = append(retry, it)
			return
		}
		if ack.Duplicate {
			p.dups.Add(1)
		} else {
			p.acked.Add(1)
		}
		if p.opts.ObserveAck != nil {
			p.opts.ObserveAck(time.Since(it.at))
		}
		it.batch.ack(it.idx)
		if !paused && tries > 0 {
			tries = 0
			p.working()
		}
	}
	failedAck := func(err error) {
		it := inflight[0]
		inflight = inflight[1:]
		fail(it, fmt.Errorf("wait for ack: %w", err))
	}
	// drain takes the acks that are already there without going back to
	// the select: under load most are, and one wake-up per ack would cost
	// more than the publish.
	drain := func() {
		for len(inflight) > 0 {
			select {
			case ack := <-inflight[0].fut.Ok():
				acked(ack)
			case err := <-inflight[0].fut.Err():
				failedAck(err)
			default:
				return
			}
		}
	}
	for {
		for !paused && len(inflight) < p.opts.MaxInFlight && len(queue) > 0 {
			it := queue[0]
			queue = queue[1:]
			if err := it.ctx.Err(); err != nil {
				it.batch.finish(&PublishError{Index: it.idx, MsgID: it.id, Err: err})
				continue
			}
			it.at = time.Now()
			fut, err := p.js.PublishMsgAsync(it.msg, noRetry)
			if err != nil {
				// Not sent: it goes back to the front of the queue, behind
				// the retries of everything sent before it (some of which
				// may fail only now).
				p.failed.Add(1)
				queue = append([]*item{it}, queue...)
				lastErr, paused = fmt.Errorf("send: %w", err), true
				break
			}
			it.fut = fut
			inflight = append(inflight, it)
		}
		p.inflight.Store(int64(len(inflight)))
		if len(queue) == 0 {
			queue = nil // let the backing array go
		}
		if paused && len(inflight) == 0 && timerC == nil {
			tries++
			wait := backoff.Delay(uint64(tries), p.opts.RetryMin, p.opts.RetryMax)
			p.failing(lastErr, len(retry)+len(queue), tries, wait)
			timer = time.NewTimer(wait)
			timerC = timer.C
		}

		var okC <-chan *jetstream.PubAck
		var errC <-chan error
		if len(inflight) > 0 {
			okC, errC = inflight[0].fut.Ok(), inflight[0].fut.Err()
		}
		select {
		case ack := <-okC:
			acked(ack)
			drain()
		case err := <-errC:
			failedAck(err)
			drain()
		case items := <-p.submit:
			queue = append(queue, items...)
		case <-timerC:
			timerC = nil
			queue = append(retry, queue...)
			retry, paused = nil, false
		case <-p.closing:
			if timer != nil {
				timer.Stop()
			}
			for _, group := range [][]*item{inflight, retry, queue} {
				for _, it := range group {
					it.batch.finish(&PublishError{Index: it.idx, MsgID: it.id, Err: ErrClosed})
				}
			}
			p.inflight.Store(0)
			return
		}
	}
}

func (p *NATS) failing(err error, pending, tries int, wait time.Duration) {
	if errors.Is(err, nats.ErrReconnectBufExceeded) {
		// The reconnect buffer is off on purpose (it would reorder): say what
		// it means rather than the client's words.
		err = errDisconnected
	}
	p.mu.Lock()
	if p.failingErr == nil {
		p.failingFrom = time.Now()
		p.outages.Add(1)
	}
	p.failingErr = err
	since := time.Since(p.failingFrom)
	// One warning when an outage starts, then one a minute: every retry of a
	// long outage at WARN would bury the rest of the log. (The error may flip
	// between sending and waiting for acks from one retry to the next.)
	level := slog.LevelDebug
	if p.warnedAt.IsZero() || time.Since(p.warnedAt) >= outageWarnEvery {
		level, p.warnedAt = slog.LevelWarn, time.Now()
	}
	p.mu.Unlock()
	p.opts.Logger.Log(context.Background(), level, "nats publish failed, retrying", "url", p.url, "err", err,
		"pending", pending, "attempt", tries, "retry_in", wait, "failing_for", since.Round(time.Millisecond))
}

// errDisconnected stands for the client's ErrReconnectBufExceeded in logs and
// in Ready.
var errDisconnected = errors.New("disconnected; publishes wait for the reconnect")

// outageWarnEvery is how often a lasting publish failure is logged at WARN.
const outageWarnEvery = time.Minute

func (p *NATS) working() {
	p.mu.Lock()
	was := p.failingErr != nil
	since := time.Since(p.failingFrom)
	p.failingErr, p.warnedAt = nil, time.Time{}
	p.mu.Unlock()
	if was {
		p.opts.Logger.Info("nats publishing recovered", "url", p.url, "outage", since.Round(time.Millisecond))
	}
}

// Ready returns nil when connected and the last publish round worked.
func (p *NATS) Ready() error {
	select {
	case <-p.closing:
		return ErrClosed
	default:
	}
	if st := p.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats %s: %s", p.url, strings.ToLower(st.String()))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failingErr != nil {
		return fmt.Errorf("nats %s: publishing fails since %s: %w",
			p.url, p.failingFrom.UTC().Format(time.RFC3339), p.failingErr)
	}
	return nil
}

// Stats returns the counters and gauges.
func (p *NATS) Stats() Stats {
	s := Stats{
		Acked:      p.acked.Load(),
		Duplicates: p.dups.Load(),
		Failed:     p.failed.Load(),
		Outages:    p.outages.Load(),
		Resent:     p.resent.Load(),
		InFlight:   int(p.inflight.Load()),
		Connected:  p.nc.Status() == nats.CONNECTED,
	}
	p.mu.Lock()
	if p.failingErr != nil {
		s.FailingFor = time.Since(p.failingFrom)
		s.LastFailure = p.failingErr.Error()
	}
	p.mu.Unlock()
	return s
}

// JetStream returns the JetStream handle of the connection, for tests and
// tools that need to look at the stream.
func (p *NATS) JetStream() jetstream.JetStream { return p.js }

// Close makes running and later Publish calls return ErrClosed and closes
// the connection. Acks not yet received are lost; their entries stay queued.
func (p *NATS) Close() error {
	p.closeOnce.Do(func() {
		close(p.closing)
		<-p.pumpDone
		p.nc.Close()
	})
	return nil
}
