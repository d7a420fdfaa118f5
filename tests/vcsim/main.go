// Command vcsim serves govmomi's vSphere API simulator for dockvols' integration tests.
//
// Debian ships the simulator library but no vcsim command, so this is the project's own,
// reduced to what the tests need: a vCenter (default) or ESX model, the PBM endpoint, a
// loopback-only listener, and the URL (with credentials) printed on one stdout line
// ("VCSIM_URL=https://user:pass@127.0.0.1:PORT/sdk") so a test can read it.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	_ "github.com/vmware/govmomi/pbm/simulator" // registers the /pbm endpoint (VPX model only)
	"github.com/vmware/govmomi/simulator"
)

func main() {
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of vCenter")
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: a random free port)")
	user := flag.String("username", "dockvols", "the only user name accepted")
	pass := flag.String("password", "vcsim-pass", "the only password accepted")
	idle := flag.Duration("idle-timeout", 0, "expire sessions idle this long (0: never)")
	machines := flag.Int("machines", 0, "VMs per host/cluster resource pool (0: the model's default of 2)")
	flag.Parse()

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	if *machines > 0 { // bench/latency_model.py attaches from up to 16 VMs at once
		model.Machine = *machines
	}
	// Sessions expiring lets tests prove the client logs in again on NotAuthenticated.
	simulator.SessionIdleTimeout = *idle
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the model failed: %v", err)
	}
	defer model.Remove() // datastore folders live under $TMPDIR

	// Loopback only: the tests never need vcsim reachable from elsewhere. An explicit
	// user/password (not the simulator's accept-anything default) lets tests prove that
	// bad credentials are refused.
	model.Service.Listen = &url.URL{
		Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)),
		User: url.UserPassword(*user, *pass),
	}
	model.Service.TLS = new(tls.Config) // self-signed: clients must opt out of verification
	model.Service.RegisterEndpoints = true
	server := model.Service.NewServer()
	defer server.Close()

	fmt.Printf("VCSIM_URL=%s\n", server.URL.String())
	_ = os.Stdout.Sync()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	sig := <-signals
	log.Printf("vcsim: %v received at %s, stopping", sig, time.Now().Format(time.RFC3339))
}
