//go:build faults

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// markersPerUnit is how many markers each seeded unit has.
const markersPerUnit = 3

// idSet is a set of ids that can hand out a random member.
type idSet struct {
	ids []int64
	pos map[int64]int
}

func newIDSet() *idSet { return &idSet{pos: map[int64]int{}} }

func (s *idSet) add(id int64) {
	if _, ok := s.pos[id]; !ok {
		s.pos[id] = len(s.ids)
		s.ids = append(s.ids, id)
	}
}

func (s *idSet) remove(id int64) {
	i, ok := s.pos[id]
	if !ok {
		return
	}
	last := s.ids[len(s.ids)-1]
	s.ids[i], s.pos[last] = last, i
	s.ids = s.ids[:len(s.ids)-1]
	delete(s.pos, id)
}

func (s *idSet) len() int { return len(s.ids) }

// take removes and returns up to n random members.
func (s *idSet) take(rng *rand.Rand, n int) []int64 {
	var out []int64
	for len(out) < n && len(s.ids) > 0 {
		id := s.ids[rng.IntN(len(s.ids))]
		s.remove(id)
		out = append(out, id)
	}
	return out
}

// op is one statement group of a master transaction.
type opKind int

const (
	deleteUnits opKind = iota
	deleteMarkers
	updateOutcomes
	deleteOutcomes
)

type op struct {
	kind opKind
	ids  []int64
	rows int64 // the rows it changes on the master (queue entries it makes)
}

// userRows are the slave's own rows, pointing at the system rows.
type report struct{ id, unit, marker, outcome int64 } // 0: NULL
type note struct{ id, report int64 }
type keeper struct{ id, marker int64 }

// model is the workload's own account of the master: which rows it deleted
// and updated. The expected final state of the slave is computed from it
// with Django's on_delete rules, independently of pgoutpost.
type model struct {
	rng                         *rand.Rand
	units, outcomes             int64
	deletable                   *idSet           // units the workload may delete
	markers                     map[int64]*idSet // alive markers of each deletable unit
	liveOutcomes                *idSet           // outcomes not deleted
	protected                   []int64          // markers a keeper points at (PROTECT)
	plantAt                     []int            // change counts at which to delete protected[i]
	deletedUnits, deletedMarker map[int64]bool   // deleted on the master
	deletedOutcome              map[int64]bool   // deleted on the master
	updates                     int64            // outcome rows updated on the master
	reports                     []report         // the slave's user rows
	notes                       []note           //
	keepers                     []keeper         //
	changes, txs                int              //
	opCount                     map[opKind]int   // statements per kind, for the report
}

func newModel(rng *rand.Rand, changes, protectedN int) *model {
	m := &model{
		rng:            rng,
		units:          int64(max(changes/4, 100)),
		outcomes:       int64(max(changes/10, 50)),
		deletable:      newIDSet(),
		markers:        map[int64]*idSet{},
		liveOutcomes:   newIDSet(),
		deletedUnits:   map[int64]bool{},
		deletedMarker:  map[int64]bool{},
		deletedOutcome: map[int64]bool{},
		opCount:        map[opKind]int{},
	}
	for u := int64(1); u <= m.units; u++ {
		m.deletable.add(u)
		ms := newIDSet()
		for j := int64(1); j <= markersPerUnit; j++ {
			ms.add((u-1)*markersPerUnit + j)
		}
		m.markers[u] = ms
	}
	for o := int64(1); o <= m.outcomes; o++ {
		m.liveOutcomes.add(o)
	}
	// Protected units are never deleted; their first marker has a keeper
	// and is deleted on the master once, alone, to plant a PROTECT conflict.
	for i, u := range m.deletable.take(rng, protectedN) {
		mk := (u-1)*markersPerUnit + 1
		m.markers[u].remove(mk)
		m.protected = append(m.protected, mk)
		m.plantAt = append(m.plantAt, (i+1)*changes/(protectedN+1))
		m.keepers = append(m.keepers, keeper{id: int64(i + 1), marker: mk})
	}
	// Reports on about 70% of the units, notes on reports.
	var rid, nid int64
	for u := int64(1); u <= m.units; u++ {
		for n := 0; n < 2 && rng.Float64() < 0.6; n++ {
			rid++
			r := report{id: rid, unit: u}
			if rng.Float64() < 0.6 {
				r.marker = (u-1)*markersPerUnit + 1 + rng.Int64N(markersPerUnit)
			}
			if rng.Float64() < 0.7 {
				r.outcome = 1 + rng.Int64N(m.outcomes)
			}
			m.reports = append(m.reports, r)
			for k := rng.IntN(3); k > 0; k-- {
				nid++
				m.notes = append(m.notes, note{id: nid, report: rid})
			}
		}
	}
	return m
}

// next returns the next master transaction, or nil when the workload has
// made all its changes. The model counts its changes as made.
func (m *model) next(target int) []op {
	if m.changes >= target {
		return nil
	}
	if len(m.plantAt) > 0 && m.changes >= m.plantAt[0] {
		mk := m.protected[len(m.protected)-len(m.plantAt)]
		m.plantAt = m.plantAt[1:]
		return m.count([]op{{kind: deleteMarkers, ids: []int64{mk}, rows: 1}})
	}
	n := func(lo, hi int) int { return lo + m.rng.IntN(hi-lo+1) }
	var tx []op
	switch r := m.rng.Float64(); {
	case r < 0.30:
		tx = m.add(tx, m.unitsOp(n(1, 6)))
	case r < 0.42:
		tx = m.add(tx, m.markersOp(n(1, 8)))
	case r < 0.80:
		tx = m.add(tx, m.updateOp(n(1, 60)))
	case r < 0.84:
		tx = m.add(tx, m.deleteOutcomesOp(n(1, 3)))
	case r < 0.97:
		tx = m.add(tx, m.markersOp(n(1, 3)))
		tx = m.add(tx, m.updateOp(n(1, 20)))
		tx = m.add(tx, m.unitsOp(n(1, 3)))
	case r < 0.985:
		tx = m.add(tx, m.unitsOp(n(20, 60)))
	default:
		tx = m.add(tx, m.updateOp(n(200, 600)))
	}
	if len(tx) == 0 { // nothing left to delete: update
		tx = m.add(tx, m.updateOp(n(1, 60)))
	}
	return m.count(tx)
}

func (m *model) add(tx []op, o op) []op {
	if len(o.ids) == 0 {
		return tx
	}
	return append(tx, o)
}

func (m *model) count(tx []op) []op {
	for _, o := range tx {
		m.changes += int(o.rows)
		m.opCount[o.kind]++
	}
	m.txs++
	return tx
}

// unitsOp deletes units the way Django's collector does: their markers
// first, then the units, in one transaction.
func (m *model) unitsOp(n int) op {
	o := op{kind: deleteUnits, ids: m.deletable.take(m.rng, n)}
	for _, u := range o.ids {
		m.deletedUnits[u] = true
		o.rows++
		for _, mk := range m.markers[u].ids {
			m.deletedMarker[mk] = true
			o.rows++
		}
		delete(m.markers, u)
	}
	return o
}

// markersOp deletes markers of random units (not their protected one).
func (m *model) markersOp(n int) op {
	o := op{kind: deleteMarkers}
	for tries := 0; len(o.ids) < n && tries < 4*n && m.deletable.len() > 0; tries++ {
		u := m.deletable.ids[m.rng.IntN(m.deletable.len())]
		for _, mk := range m.markers[u].take(m.rng, 1) {
			m.deletedMarker[mk] = true
			o.ids = append(o.ids, mk)
			o.rows++
		}
	}
	return o
}

func (m *model) updateOp(n int) op {
	o := op{kind: updateOutcomes}
	seen := map[int64]bool{}
	for len(o.ids) < min(n, m.liveOutcomes.len()) {
		id := m.liveOutcomes.ids[m.rng.IntN(m.liveOutcomes.len())]
		if !seen[id] {
			seen[id] = true
			o.ids = append(o.ids, id)
		}
	}
	o.rows = int64(len(o.ids))
	m.updates += o.rows
	return o
}

func (m *model) deleteOutcomesOp(n int) op {
	o := op{kind: deleteOutcomes, ids: m.liveOutcomes.take(m.rng, n)}
	for _, id := range o.ids {
		m.deletedOutcome[id] = true
	}
	o.rows = int64(len(o.ids))
	return o
}

// apply runs one transaction on the master and checks that it changed the
// rows the model expects.
func apply(ctx context.Context, db *pgxpool.Pool, tx []op) error {
	return pgx.BeginFunc(ctx, db, func(tx2 pgx.Tx) error {
		for _, o := range tx {
			var stmts []string
			switch o.kind {
			case deleteUnits:
				stmts = []string{
					"DELETE FROM shop_marker WHERE unit_id = ANY($1)",
					"DELETE FROM shop_unit WHERE id = ANY($1)",
				}
			case deleteMarkers:
				stmts = []string{"DELETE FROM shop_marker WHERE id = ANY($1)"}
			case updateOutcomes:
				stmts = []string{"UPDATE shop_outcome SET score = score + 1, name = 'outcome ' || id || ' v' || (score + 1) WHERE id = ANY($1)"}
			case deleteOutcomes:
				stmts = []string{"DELETE FROM shop_outcome WHERE id = ANY($1)"}
			}
			var rows int64
			for _, s := range stmts {
				tag, err := tx2.Exec(ctx, s, o.ids)
				if err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
				rows += tag.RowsAffected()
			}
			if rows != o.rows {
				return fmt.Errorf("op %d on %v changed %d rows, the model says %d", o.kind, o.ids, rows, o.rows)
			}
		}
		return nil
	})
}

// expectedMarkers are the markers the slave must hold: those the master
// holds plus the protected ones whose delete the slave refused (the model
// does not count those as deleted).
func (m *model) expectedMarkers() []int64 {
	var out []int64
	for id := int64(1); id <= m.units*markersPerUnit; id++ {
		if !m.deletedMarker[id] {
			out = append(out, id)
		}
	}
	return out
}

// planted returns the protected markers deleted on the master.
func (m *model) planted() []int64 { return m.protected[:len(m.protected)-len(m.plantAt)] }

func (m *model) expectedUnits() []int64 {
	var out []int64
	for id := int64(1); id <= m.units; id++ {
		if !m.deletedUnits[id] {
			out = append(out, id)
		}
	}
	return out
}

func (m *model) expectedOutcomes() []int64 {
	var out []int64
	for id := int64(1); id <= m.outcomes; id++ {
		if !m.deletedOutcome[id] {
			out = append(out, id)
		}
	}
	return out
}

// expectedReports applies Django's rules to the slave's reports: CASCADE
// from unit, SET_NULL from marker and outcome.
func (m *model) expectedReports() []report {
	markers := map[int64]bool{}
	for _, id := range m.expectedMarkers() {
		markers[id] = true
	}
	var out []report
	for _, r := range m.reports {
		if m.deletedUnits[r.unit] {
			continue
		}
		if r.marker != 0 && !markers[r.marker] {
			r.marker = 0
		}
		if r.outcome != 0 && m.deletedOutcome[r.outcome] {
			r.outcome = 0
		}
		out = append(out, r)
	}
	return out
}

// expectedNotes are the notes whose report stays (CASCADE).
func (m *model) expectedNotes() []note {
	var out []note
	for _, n := range m.notes {
		if !m.deletedUnits[m.reports[n.report-1].unit] {
			out = append(out, n)
		}
	}
	return out
}

// expectedDeletes are the rows the slave must have deleted, once each, by
// table (what its faults_deleted log records).
func (m *model) expectedDeletes() map[string][]int64 {
	out := map[string][]int64{}
	for id := range m.deletedUnits {
		out["shop_unit"] = append(out["shop_unit"], id)
	}
	for id := range m.deletedMarker {
		out["shop_marker"] = append(out["shop_marker"], id)
	}
	for id := range m.deletedOutcome {
		out["shop_outcome"] = append(out["shop_outcome"], id)
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}
