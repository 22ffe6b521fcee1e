// Command deliver delivers one message with the default policy
// (opportunistic STARTTLS, plaintext fallback) and prints how it travelled.
//
//	go run ./deliver you@example.org [from@example.com]
//
// Against the test peers, from the top of the source tree after
// `meson setup build && ninja -C build`:
//
//	python3 tests/peers/peers.py run --dir /tmp/peers -- sh -c '
//	    export PKG_CONFIG_PATH=$PWD/build/meson-uninstalled LD_LIBRARY_PATH=$PWD/build
//	    cd examples/go && go run ./deliver you@valid.tm.test'
//
// Environment (optional): TLSMAIL_HOST (deliver to this host instead of the
// MX hosts), TLSMAIL_PORT, TLSMAIL_CA_FILE, TLSMAIL_DNS; the test peers'
// TM_TEST_PORT, TM_TEST_CA, TM_TEST_DNS are used when those are not set.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"tlsmail"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return os.Getenv(fallback)
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: deliver TO [FROM]")
		os.Exit(64)
	}
	from := "sender@tm.test"
	if len(os.Args) == 3 {
		from = os.Args[2]
	}
	port, _ := strconv.Atoi(env("TLSMAIL_PORT", "TM_TEST_PORT"))
	ctx, err := tlsmail.NewContext(tlsmail.ContextOptions{
		CAFile:         env("TLSMAIL_CA_FILE", "TM_TEST_CA"),
		DNSServer:      env("TLSMAIL_DNS", "TM_TEST_DNS"),
		Port:           port,
		HeloName:       "client.tm.test",
		CommandTimeout: 30 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(70)
	}
	defer ctx.Close()

	msg := tlsmail.Message{
		From: from,
		To:   []string{os.Args[1]},
		Data: []byte("Subject: hello from libtlsmail\r\n\r\nSent by examples/go/deliver.\r\n"),
	}
	var where *tlsmail.SessionOptions
	if h := os.Getenv("TLSMAIL_HOST"); h != "" {
		where = &tlsmail.SessionOptions{Host: h}
	}
	// nil policy: the defaults.  The status is filled even when err != nil.
	st, err := tlsmail.Deliver(ctx, msg, nil, where)
	fmt.Printf("%s via %s [%s]: tls=%v certificate-verified=%v (err: %v)\n",
		st.Result, st.MXHost, st.MXAddress, st.TLS, st.CertVerified, err)
	for _, r := range st.Recipients { // one entry per recipient, in the order of To
		fmt.Printf("%s: %s, %d %s\n", r.Address, r.Result, r.Code, r.Message)
	}
	fmt.Println(st.JSON())
	switch st.Result {
	case tlsmail.Delivered:
	case tlsmail.Bounced:
		os.Exit(69)
	default:
		os.Exit(75)
	}
}
