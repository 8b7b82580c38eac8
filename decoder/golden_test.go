package decoder_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgoutpost/pgoutpost/decoder"
)

var (
	update     = flag.Bool("update", false, "capture the golden streams from a fresh PostgreSQL and rewrite testdata")
	updateOnly = flag.String("update.only", "", "with -update: rewrite only these captures (comma-separated names, e.g. v4_parallel)")
)

// rewrites reports whether -update rewrites capture name.
func rewrites(name string) bool {
	return *update && (*updateOnly == "" || slices.Contains(strings.Split(*updateOnly, ","), name))
}

// TestGolden decodes the committed captures and compares their rendering to
// the golden files. With -update it first captures the streams anew.
func TestGolden(t *testing.T) {
	if *update {
		captures, _ := captureAll(t)
		for _, spec := range captureSpecs {
			msgs, ok := captures[spec.name]
			if !rewrites(spec.name) {
				continue
			}
			if !ok {
				t.Fatalf("capture %s needs server_version_num %d or newer: run -update on such a server (make test PG=17)", spec.name, spec.minVersion)
			}
			if err := writeCapture(filepath.Join("testdata", spec.name+".bin"), msgs); err != nil {
				t.Fatal(err)
			}
		}
		if rewrites("bench_orders") {
			if err := writeCapture(filepath.Join("testdata", "bench_orders.bin"), captureBench(t)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, spec := range captureSpecs {
		t.Run(spec.name, func(t *testing.T) {
			got, err := render(readCapture(t, spec.name))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", spec.name+".golden")
			if rewrites(spec.name) {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := firstDiff(string(want), got); d != "" {
				t.Errorf("rendering differs from %s (regenerate with -update):\n%s", path, d)
			}
			// The spooling path (Unstream, then Decode at commit) reads the
			// same as DecodeStreamed.
			viaUnstream, err := renderWith(readCapture(t, spec.name), true)
			if err != nil {
				t.Fatal(err)
			}
			if d := firstDiff(got, viaUnstream); d != "" {
				t.Errorf("Unstream + Decode differs from DecodeStreamed:\n%s", d)
			}
		})
	}
}

// TestLiveCaptureMatchesGolden runs the workload on a fresh server and checks
// that the stream it sends now renders like the committed capture once LSNs,
// times, xids and oids (which differ from run to run) are masked.
func TestLiveCaptureMatchesGolden(t *testing.T) {
	captures, version := captureAll(t)
	for _, spec := range captureSpecs {
		t.Run(spec.name, func(t *testing.T) {
			if _, ok := captures[spec.name]; !ok {
				t.Skipf("the server does not speak it (needs server_version_num %d)", spec.minVersion)
			}
			got, err := render(captures[spec.name])
			if err != nil {
				t.Fatal(err)
			}
			want, err := render(readCapture(t, spec.name))
			if err != nil {
				t.Fatal(err)
			}
			if version >= 180000 {
				// 18 no longer streams a transaction that had already
				// aborted when it was decoded (the capture's ROLLBACK).
				want = dropAbortedStreams(want)
			}
			if d := firstDiff(mask(want), mask(got)); d != "" {
				t.Errorf("live stream differs from the committed capture:\n%s", d)
			}
		})
	}
}

var volatile = regexp.MustCompile(`\b(xid|subxid|id|oid)=\d+|\b(\w+_lsn)=[0-9A-F]+/[0-9A-F]+|\b(\w+_time)=\S+`)

func mask(s string) string {
	return volatile.ReplaceAllStringFunc(s, func(m string) string {
		return m[:strings.IndexByte(m, '=')+1] + "*"
	})
}

func firstDiff(want, got string) string {
	if want == got {
		return ""
	}
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\nwant: %s\ngot:  %s", i+1, w, g)
		}
	}
	return "(same lines, different bytes)"
}

// render decodes a capture the way a stream consumer does (stream blocks
// through DecodeStreamed) and writes one line per message. Runs of inserts
// into one table are shortened to their first and last rows.
func render(msgs [][]byte) (string, error) { return renderWith(msgs, false) }

func renderWith(msgs [][]byte, unstream bool) (string, error) {
	r := renderer{d: &decoder.Decoder{TypeMap: pgtype.NewMap()}, unstream: unstream}
	for i, data := range msgs {
		if err := r.message(data); err != nil {
			return "", fmt.Errorf("message %d: %w", i, err)
		}
	}
	r.flushRun()
	return r.b.String(), nil
}

type renderer struct {
	d        *decoder.Decoder
	unstream bool   // decode stream blocks with Unstream + Decode
	buf      []byte // Unstream's reused buffer
	b        strings.Builder
	inStream bool
	inTx     bool

	// A run of inserts into one relation: rendered first and last lines.
	runRel   *decoder.Relation
	runXid   string
	runCount int
	runLast  string
}

func (r *renderer) line(format string, args ...any) {
	r.rawLine(fmt.Sprintf(format, args...))
}

func (r *renderer) rawLine(s string) {
	if r.inStream || r.inTx {
		r.b.WriteString("  ")
	}
	r.b.WriteString(s)
	r.b.WriteByte('\n')
}

func (r *renderer) flushRun() {
	if r.runCount > 2 {
		r.rawLine(fmt.Sprintf("... %d more INSERT into %s.%s ...", r.runCount-2, r.runRel.Namespace, r.runRel.Name))
	}
	if r.runCount > 1 {
		r.rawLine(r.runLast)
	}
	r.runRel, r.runCount = nil, 0
}

func ts(t time.Time) string { return t.Format(time.RFC3339Nano) }

func (r *renderer) message(data []byte) error {
	var (
		m      decoder.Message
		xidTag string
		err    error
	)
	if r.inStream && data[0] != byte(decoder.TypeStreamStop) && r.unstream {
		var xid uint32
		if xid, err = decoder.StreamXid(data); err != nil {
			return err
		}
		if r.buf, err = decoder.Unstream(r.buf[:0], data); err != nil {
			return err
		}
		m, err = r.d.Decode(r.buf)
		xidTag = fmt.Sprintf("xid=%d: ", xid)
	} else if r.inStream && data[0] != byte(decoder.TypeStreamStop) {
		var xid uint32
		m, xid, err = r.d.DecodeStreamed(data)
		xidTag = fmt.Sprintf("xid=%d: ", xid)
	} else {
		m, err = r.d.Decode(data)
	}
	if err != nil {
		return err
	}
	if ins, ok := m.(*decoder.Insert); !ok || ins.Relation != r.runRel || xidTag != r.runXid {
		r.flushRun()
	}
	switch m := m.(type) {
	case *decoder.Begin:
		r.line("BEGIN final_lsn=%s xid=%d commit_time=%s", m.FinalLSN, m.Xid, ts(m.CommitTime))
		r.inTx = true
	case *decoder.Commit:
		r.inTx = false
		r.line("COMMIT flags=%d commit_lsn=%s end_lsn=%s commit_time=%s", m.Flags, m.CommitLSN, m.EndLSN, ts(m.CommitTime))
	case *decoder.Origin:
		r.line("ORIGIN name=%s commit_lsn=%s", m.Name, m.CommitLSN)
	case *decoder.Relation:
		cols := make([]string, len(m.Columns))
		for i, c := range m.Columns {
			cols[i] = c.Name + " " + r.typeName(c.TypeOID)
			if c.TypeMod != -1 {
				cols[i] += fmt.Sprintf("(typmod %d)", c.TypeMod)
			}
			if c.IsKey() {
				cols[i] += " key"
			}
		}
		r.line("%sRELATION %s.%s id=%d replica_identity=%c columns=[%s]", xidTag, m.Namespace, m.Name, m.ID, m.ReplicaIdentity, strings.Join(cols, ", "))
	case *decoder.TypeInfo:
		r.line("%sTYPE %s.%s oid=%d", xidTag, m.Namespace, m.Name, m.OID)
	case *decoder.Insert:
		s := xidTag + "INSERT " + r.relName(m.Relation) + " new=" + r.tuple(m.Relation, &m.New)
		if r.runCount > 0 {
			r.runCount++
			r.runLast = s
			return nil
		}
		r.line("%s", s)
		r.runRel, r.runXid, r.runCount = m.Relation, xidTag, 1
	case *decoder.Update:
		old := ""
		switch m.OldKind {
		case decoder.OldKey:
			old = " old_key=" + r.tuple(m.Relation, &m.Old)
		case decoder.OldTuple:
			old = " old=" + r.tuple(m.Relation, &m.Old)
		}
		r.line("%sUPDATE %s%s new=%s", xidTag, r.relName(m.Relation), old, r.tuple(m.Relation, &m.New))
	case *decoder.Delete:
		kind := "old_key"
		if m.OldKind == decoder.OldTuple {
			kind = "old"
		}
		r.line("%sDELETE %s %s=%s", xidTag, r.relName(m.Relation), kind, r.tuple(m.Relation, &m.Old))
	case *decoder.Truncate:
		names := make([]string, len(m.RelationIDs))
		for i, id := range m.RelationIDs {
			rel, _ := r.d.Relation(id)
			names[i] = r.relName(rel)
		}
		r.line("%sTRUNCATE cascade=%t restart_identity=%t relations=[%s]", xidTag, m.Cascade(), m.RestartIdentity(), strings.Join(names, ", "))
	case *decoder.LogicalMessage:
		r.line("%sMESSAGE transactional=%t message_lsn=%s prefix=%s content=%q", xidTag, m.Transactional, m.LSN, m.Prefix, m.Content)
	case *decoder.StreamStart:
		r.line("STREAM START xid=%d first_segment=%t", m.Xid, m.FirstSegment)
		r.inStream = true
	case *decoder.StreamStop:
		r.inStream = false
		r.line("STREAM STOP")
	case *decoder.StreamCommit:
		r.line("STREAM COMMIT xid=%d flags=%d commit_lsn=%s end_lsn=%s commit_time=%s", m.Xid, m.Flags, m.CommitLSN, m.EndLSN, ts(m.CommitTime))
	case *decoder.StreamAbort:
		if m.AbortLSN == 0 {
			r.line("STREAM ABORT xid=%d subxid=%d", m.Xid, m.SubXid)
		} else {
			r.line("STREAM ABORT xid=%d subxid=%d abort_lsn=%s abort_time=%s", m.Xid, m.SubXid, m.AbortLSN, ts(m.AbortTime))
		}
	case *decoder.BeginPrepare:
		r.line("BEGIN PREPARE gid=%s xid=%d prepare_lsn=%s end_lsn=%s prepare_time=%s", m.GID, m.Xid, m.PrepareLSN, m.EndLSN, ts(m.PrepareTime))
		r.inTx = true
	case *decoder.Prepare:
		r.inTx = false
		r.line("PREPARE gid=%s xid=%d flags=%d prepare_lsn=%s end_lsn=%s prepare_time=%s", m.GID, m.Xid, m.Flags, m.PrepareLSN, m.EndLSN, ts(m.PrepareTime))
	case *decoder.StreamPrepare:
		r.line("STREAM PREPARE gid=%s xid=%d flags=%d prepare_lsn=%s end_lsn=%s prepare_time=%s", m.GID, m.Xid, m.Flags, m.PrepareLSN, m.EndLSN, ts(m.PrepareTime))
	case *decoder.CommitPrepared:
		r.line("COMMIT PREPARED gid=%s xid=%d flags=%d commit_lsn=%s end_lsn=%s commit_time=%s", m.GID, m.Xid, m.Flags, m.CommitLSN, m.EndLSN, ts(m.CommitTime))
	case *decoder.RollbackPrepared:
		r.line("ROLLBACK PREPARED gid=%s xid=%d flags=%d prepare_end_lsn=%s rollback_end_lsn=%s prepare_time=%s rollback_time=%s",
			m.GID, m.Xid, m.Flags, m.PrepareEndLSN, m.RollbackEndLSN, ts(m.PrepareTime), ts(m.RollbackTime))
	default:
		return fmt.Errorf("no rendering for %T", m)
	}
	return nil
}

func (r *renderer) relName(rel *decoder.Relation) string {
	if rel == nil {
		return "<unknown relation>"
	}
	return rel.Namespace + "." + rel.Name
}

func (r *renderer) typeName(oid uint32) string {
	if t, ok := r.d.TypeMap.TypeForOID(oid); ok {
		return t.Name
	}
	if t, ok := r.d.TypeInfo(oid); ok {
		return t.Namespace + "." + t.Name
	}
	return fmt.Sprintf("oid %d", oid)
}

// tuple renders the columns as name=value: text values quoted (long ones
// shortened), binary values decoded and re-encoded as text through pgtype
// (b"..."), NULL, or TOAST-UNCHANGED. A value pgtype cannot decode shows
// its error, so the golden file records it.
func (r *renderer) tuple(rel *decoder.Relation, t *decoder.Tuple) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(rel.Columns[i].Name)
		b.WriteByte('=')
		switch c.Kind {
		case decoder.ColumnNull:
			b.WriteString("NULL")
			continue
		case decoder.ColumnUnchanged:
			b.WriteString("TOAST-UNCHANGED")
			continue
		}
		v, err := r.d.Value(rel, t, i)
		if err != nil {
			fmt.Fprintf(&b, "!%v", err)
			continue
		}
		if c.Kind == decoder.ColumnText {
			b.WriteString(quote(c.Data))
			continue
		}
		oid := rel.Columns[i].TypeOID
		if _, known := r.d.TypeMap.TypeForOID(oid); !known {
			// An enum, domain or extension type: Value returned its bytes.
			fmt.Fprintf(&b, "b%q", c.Data)
			continue
		}
		text, err := r.d.TypeMap.Encode(oid, pgtype.TextFormatCode, v, nil)
		if err != nil {
			fmt.Fprintf(&b, "!%v", err)
			continue
		}
		b.WriteString("b" + quote(text))
	}
	b.WriteByte(')')
	return b.String()
}

func quote(p []byte) string {
	if len(p) > 60 {
		return strconv.Quote(string(p[:40])) + fmt.Sprintf("...(%d bytes)", len(p))
	}
	return strconv.Quote(string(p))
}

var streamAbortLine = regexp.MustCompile(`^STREAM ABORT xid=(\d+) subxid=(\d+)`)

// dropAbortedStreams removes from a rendering the stream blocks and the
// Stream Abort of each transaction aborted as a whole.
func dropAbortedStreams(s string) string {
	lines := strings.Split(s, "\n")
	aborted := map[string]bool{}
	for _, l := range lines {
		if m := streamAbortLine.FindStringSubmatch(l); m != nil && m[1] == m[2] {
			aborted[m[1]] = true
		}
	}
	var out []string
	skipping := false
	for _, l := range lines {
		if m := streamAbortLine.FindStringSubmatch(l); m != nil && aborted[m[1]] && m[1] == m[2] {
			continue
		}
		if xid, ok := strings.CutPrefix(l, "STREAM START xid="); ok {
			xid, _, _ = strings.Cut(xid, " ")
			skipping = aborted[xid]
		}
		if !skipping {
			out = append(out, l)
		}
		if l == "STREAM STOP" {
			skipping = false
		}
	}
	return strings.Join(out, "\n")
}
