// Command pgoutpost keeps chosen PostgreSQL tables in sync from a master
// environment to slave environments and runs as the slave database's sidecar.
// Run `pgoutpost --help` for the commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// SIGHUP (a terminal closing, a supervisor's "reload") would otherwise
	// kill the process at once, with nothing logged and work in flight.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			fmt.Fprintln(os.Stderr, "pgoutpost: SIGHUP ignored (the configuration is read at start: restart to apply a new one)")
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
