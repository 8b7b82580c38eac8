// Package connsource says where a connection string comes from and reads it
// from there: inline, from an environment variable, from a file, or — for the
// master only — from an AWS Secrets Manager secret. The configuration's
// database: and master: sections and the subscription commands' --conninfo
// flags are all a Source, so "exactly one source", the secret's default
// region and the errors (which name the variable, file or secret, never a
// value) are decided here once. A Source never shows a password when printed
// or logged.
package connsource
