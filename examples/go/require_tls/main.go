// Command require_tls delivers one message only over TLS with a verified
// certificate; a domain whose MX hosts cannot give it is deferred, never
// sent in plaintext.
//
//	go run ./require_tls you@example.org [--skip-verify]
//
// Against the test peers, from the top of the source tree after
// `meson setup build && ninja -C build` (the first is delivered over
// verified TLS, the second deferred: mx-plain offers no STARTTLS):
//
//	python3 tests/peers/peers.py run --dir /tmp/peers -- sh -c '
//	    export PKG_CONFIG_PATH=$PWD/build/meson-uninstalled LD_LIBRARY_PATH=$PWD/build
//	    cd examples/go && go run ./require_tls you@valid.tm.test
//	    go run ./require_tls you@plain.tm.test'
//
// Environment as in examples/go/deliver.
package main

import (
	"errors"
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
	if len(os.Args) < 2 || len(os.Args) > 3 || os.Args[1] == "--help" ||
		(len(os.Args) == 3 && os.Args[2] != "--skip-verify") {
		fmt.Fprintln(os.Stderr, "usage: require_tls TO [--skip-verify]")
		os.Exit(64)
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

	// On sets a flag, Off forces it off, Unset leaves it to the sending
	// domain's settings.  SkipVerify accepts any certificate, but the status
	// still says whether it verified.
	policy := &tlsmail.Policy{RequireTLS: tlsmail.On}
	if len(os.Args) == 3 {
		policy.SkipVerify = tlsmail.On
	}
	var where *tlsmail.SessionOptions
	if h := os.Getenv("TLSMAIL_HOST"); h != "" {
		where = &tlsmail.SessionOptions{Host: h}
	}
	st, err := tlsmail.Deliver(ctx, tlsmail.Message{
		From: "sender@tm.test",
		To:   []string{os.Args[1]},
		Data: []byte("Subject: only over TLS\r\n\r\nSent by examples/go/require_tls.\r\n"),
	}, policy, where)

	fmt.Printf("%s: %s\n", os.Args[1], st.Result)
	if errors.Is(err, tlsmail.ErrTLSRequired) {
		fmt.Println("  not sent: no MX host gave (verified) TLS")
	}
	fmt.Printf("  error                %v\n", err)
	fmt.Printf("  mx-host              %s [%s]:%d\n", st.MXHost, st.MXAddress, st.MXPort)
	fmt.Printf("  tls                  %v %s %s\n", st.TLS, st.TLSVersion, st.TLSCipher)
	fmt.Printf("  certificate-verified %v\n", st.CertVerified)
	fmt.Printf("  tls-error            %s\n", st.TLSError)
	fmt.Printf("  reply                %d %s %s\n", st.Code, st.EnhancedCode, st.Message)
	fmt.Printf("  description          %s\n", st.Description)
	switch st.Result {
	case tlsmail.Delivered:
	case tlsmail.Bounced:
		os.Exit(69)
	default:
		os.Exit(75)
	}
}
