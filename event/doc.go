// Package event is the contract of pgoutpost's denormalize events: the Go type
// of the JSON body, its encoding, the NATS subject and header names. Both the
// sidecar's publisher and application consumers import it; it imports only the
// standard library and does no I/O.
//
// An event body (version 1) looks like this:
//
//	{
//	  "v": 1,
//	  "env": "staging",
//	  "table": "public.shop_outcome",
//	  "op": "update",
//	  "pk": {"id": 42},
//	  "queue_id": "0192f3b4-7c1e-7a4e-9a51-3f0c2d9e8b11",
//	  "committed_at": "2026-11-24T15:37:01.123456Z",
//	  "row": {"id": 42, "name": "won", "score": 3}
//	}
//
// It is published on the subject <prefix>.<env>.denormalize.<schema>.<table>
// (see [Subject]) with the headers Nats-Msg-Id, Pgoutpost-Table and
// Pgoutpost-Op, and the CloudEvents binary-mode attributes of
// [CloudEventHeaders] (ce-id, ce-type, ce-subject …), so that a CloudEvents
// SDK reads the same message as a CloudEvent whose data is this body.
package event
