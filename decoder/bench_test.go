package decoder_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgoutpost/pgoutpost/decoder"
)

// The benchmarks decode testdata/bench_orders.bin: 1,000 Insert messages of
// a 10-column table (bigint, int, 2 numeric, 3 text, 2 timestamptz, bool;
// about 180 bytes per message) in 10 transactions, as captured from
// PostgreSQL 15. One op is one pass over the capture.
//
//	go test ./decoder -run '^$' -bench Decode -benchmem -cpu 1
//
// Paths compared on the same bytes:
//   - pglogrepl: pglogrepl.ParseV2 (whose TupleData.Decode copies every
//     column) with a RelationMessageV2 cache, then every text column decoded
//     to a Go value with pgtype's Codec.DecodeValue by its type OID, as the
//     pglogrepl example does.
//   - pgoutpost/typed: Decoder.Decode, then every column scanned by its type
//     OID through Decoder.Scan into reused Go destinations: int64, int32,
//     pgtype.Numeric, []byte (text, a slice of the message), time.Time, bool.
//   - pgoutpost/typed-float: the same with the two numerics scanned into
//     float64 (lossy, allocation-free) instead of pgtype.Numeric.
//   - pgoutpost/raw and pglogrepl/parse: the parse alone, columns left as bytes.

func benchMessages(b *testing.B) (msgs [][]byte, rows int) {
	msgs = readCapture(b, "bench_orders")
	for _, m := range msgs {
		if m[0] == byte(decoder.TypeInsert) {
			rows++
		}
	}
	if rows == 0 {
		b.Fatal("bench capture holds no Insert")
	}
	return msgs, rows
}

// report adds rows per second (per core when run with -cpu 1), nanoseconds
// and allocations per row.
func report(b *testing.B, rows int, mallocs uint64) {
	n := float64(b.N) * float64(rows)
	b.ReportMetric(n/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/row")
	b.ReportMetric(float64(mallocs)/n, "allocs/row")
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

func BenchmarkDecode(b *testing.B) {
	msgs, rows := benchMessages(b)
	bytes := 0
	for _, m := range msgs {
		bytes += len(m)
	}
	b.Run("pgoutpost/raw", func(b *testing.B) {
		b.SetBytes(int64(bytes))
		var d decoder.Decoder
		var sink int
		b.ResetTimer()
		before := mallocs()
		for i := 0; i < b.N; i++ {
			sink += decodeRaw(b, &d, msgs)
		}
		after := mallocs()
		b.StopTimer()
		report(b, rows, after-before)
		_ = sink
	})
	b.Run("pgoutpost/typed", func(b *testing.B) {
		b.SetBytes(int64(bytes))
		d := decoder.Decoder{TypeMap: pgtype.NewMap()}
		var v typedRow
		b.ResetTimer()
		before := mallocs()
		for i := 0; i < b.N; i++ {
			decodeTyped(b, &d, msgs, &v)
		}
		after := mallocs()
		b.StopTimer()
		report(b, rows, after-before)
	})
	b.Run("pgoutpost/typed-float", func(b *testing.B) {
		b.SetBytes(int64(bytes))
		d := decoder.Decoder{TypeMap: pgtype.NewMap()}
		var v typedRow
		v.floats = true
		b.ResetTimer()
		before := mallocs()
		for i := 0; i < b.N; i++ {
			decodeTyped(b, &d, msgs, &v)
		}
		after := mallocs()
		b.StopTimer()
		report(b, rows, after-before)
	})
	b.Run("pglogrepl/parse", func(b *testing.B) {
		b.SetBytes(int64(bytes))
		b.ResetTimer()
		before := mallocs()
		for i := 0; i < b.N; i++ {
			pglogreplParse(b, msgs)
		}
		after := mallocs()
		b.StopTimer()
		report(b, rows, after-before)
	})
	b.Run("pglogrepl/values", func(b *testing.B) {
		b.SetBytes(int64(bytes))
		typeMap := pgtype.NewMap()
		b.ResetTimer()
		before := mallocs()
		for i := 0; i < b.N; i++ {
			pglogreplValues(b, typeMap, msgs)
		}
		after := mallocs()
		b.StopTimer()
		report(b, rows, after-before)
	})
}

// BenchmarkDecodeRatio runs the pglogrepl and pgoutpost paths alternately in
// one benchmark and reports how many times faster pgoutpost is.
func BenchmarkDecodeRatio(b *testing.B) {
	msgs, rows := benchMessages(b)
	typeMap := pgtype.NewMap()
	d := decoder.Decoder{TypeMap: typeMap}
	var v typedRow
	var sink int
	var tTyped, tRaw, tValues, tParse time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		pglogreplValues(b, typeMap, msgs)
		t1 := time.Now()
		decodeTyped(b, &d, msgs, &v)
		t2 := time.Now()
		pglogreplParse(b, msgs)
		t3 := time.Now()
		sink += decodeRaw(b, &d, msgs)
		t4 := time.Now()
		tValues, tTyped, tParse, tRaw = tValues+t1.Sub(t0), tTyped+t2.Sub(t1), tParse+t3.Sub(t2), tRaw+t4.Sub(t3)
	}
	n := float64(b.N) * float64(rows)
	b.ReportMetric(float64(tValues)/n, "pglogrepl-values-ns/row")
	b.ReportMetric(float64(tTyped)/n, "pgoutpost-typed-ns/row")
	b.ReportMetric(float64(tValues)/float64(tTyped), "typed-x-faster")
	b.ReportMetric(float64(tParse)/n, "pglogrepl-parse-ns/row")
	b.ReportMetric(float64(tRaw)/n, "pgoutpost-raw-ns/row")
	b.ReportMetric(float64(tParse)/float64(tRaw), "raw-x-faster")
	_ = sink
}

// decodeRaw decodes every message and touches every column's bytes.
func decodeRaw(b *testing.B, d *decoder.Decoder, msgs [][]byte) int {
	n := 0
	for _, data := range msgs {
		m, err := d.Decode(data)
		if err != nil {
			b.Fatal(err)
		}
		if ins, ok := m.(*decoder.Insert); ok {
			for _, c := range ins.New.Columns {
				n += len(c.Data)
			}
		}
	}
	return n
}

// typedRow holds the Go values of one orders row; it is reused.
type typedRow struct {
	id             int64
	qty            int32
	price, score   pgtype.Numeric
	name, sku      []byte
	note           []byte
	created, upd   time.Time
	active         bool
	fprice, fscore float64
	floats         bool // numerics into float64 instead of pgtype.Numeric
	dsts           []any
	scannedValues  int
}

func (v *typedRow) targets() []any {
	if v.dsts == nil {
		v.dsts = []any{&v.id, &v.qty, &v.price, &v.name, &v.sku, &v.note, &v.created, &v.upd, &v.active, &v.score}
		if v.floats {
			v.dsts[2], v.dsts[9] = &v.fprice, &v.fscore
		}
	}
	return v.dsts
}

func decodeTyped(b *testing.B, d *decoder.Decoder, msgs [][]byte, v *typedRow) {
	dsts := v.targets()
	for _, data := range msgs {
		m, err := d.Decode(data)
		if err != nil {
			b.Fatal(err)
		}
		ins, ok := m.(*decoder.Insert)
		if !ok {
			continue
		}
		for i := range ins.New.Columns {
			if err := d.Scan(ins.Relation, &ins.New, i, dsts[i]); err != nil {
				b.Fatal(err)
			}
		}
		v.scannedValues += len(ins.New.Columns)
	}
}

func pglogreplParse(b *testing.B, msgs [][]byte) {
	for _, data := range msgs {
		if _, err := pglogrepl.ParseV2(data, false); err != nil {
			b.Fatal(err)
		}
	}
}

// pglogreplValues is what a consumer of pglogrepl writes (its example's
// decodeTextColumnData): parse, keep relations, decode each column to a Go
// value by type OID.
func pglogreplValues(b *testing.B, typeMap *pgtype.Map, msgs [][]byte) {
	relations := map[uint32]*pglogrepl.RelationMessageV2{}
	var values []any
	for _, data := range msgs {
		m, err := pglogrepl.ParseV2(data, false)
		if err != nil {
			b.Fatal(err)
		}
		switch m := m.(type) {
		case *pglogrepl.RelationMessageV2:
			relations[m.RelationID] = m
		case *pglogrepl.InsertMessageV2:
			rel, ok := relations[m.RelationID]
			if !ok {
				b.Fatal("unknown relation")
			}
			values = values[:0]
			for i, col := range m.Tuple.Columns {
				if col.DataType != 't' {
					continue
				}
				oid := rel.Columns[i].DataType
				typ, ok := typeMap.TypeForOID(oid)
				if !ok {
					b.Fatalf("type %d unknown", oid)
				}
				val, err := typ.Codec.DecodeValue(typeMap, oid, pgtype.TextFormatCode, col.Data)
				if err != nil {
					b.Fatal(err)
				}
				values = append(values, val)
			}
		}
	}
}
