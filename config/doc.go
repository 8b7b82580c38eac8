// Package config reads sidecar.yaml: a strict decoder that reports every
// unknown key, wrong type and bad rule with its file and line, named defaults,
// PGOUTPOST_* environment overrides and a Validate that lists every problem.
// Its database: and master: sections are connsource.Sources; config reads no
// connection string itself, does no network I/O, and knows nothing of the
// database: registry.Load resolves RegistrySpec against it.
package config
