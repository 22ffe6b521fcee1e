// Command session sends several messages over one SMTP session: open it,
// apply the policy once (STARTTLS), send each message, close.
//
//	go run ./session you@example.org [COUNT]
//
// Against the test peers, from the top of the source tree after
// `meson setup build && ninja -C build`:
//
//	python3 tests/peers/peers.py run --dir /tmp/peers -- sh -c '
//	    export PKG_CONFIG_PATH=$PWD/build/meson-uninstalled LD_LIBRARY_PATH=$PWD/build
//	    cd examples/go && go run ./session you@valid.tm.test 3'
//
// Environment as in examples/go/deliver.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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
	if len(os.Args) < 2 || len(os.Args) > 3 || !strings.Contains(os.Args[1], "@") {
		fmt.Fprintln(os.Stderr, "usage: session TO [COUNT]")
		os.Exit(64)
	}
	to := os.Args[1]
	count := 3
	if len(os.Args) == 3 {
		count, _ = strconv.Atoi(os.Args[2])
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

	var where *tlsmail.SessionOptions
	if h := os.Getenv("TLSMAIL_HOST"); h != "" {
		where = &tlsmail.SessionOptions{Host: h}
	}
	domain := to[strings.LastIndexByte(to, '@')+1:]

	// Connect to the domain's first reachable MX and say EHLO.
	s, st, err := tlsmail.OpenSession(ctx, domain, where)
	fmt.Printf("open:     %s [%s] (err: %v)\n", st.MXHost, st.MXAddress, err)
	if err != nil {
		os.Exit(75)
	}
	defer s.Close() // QUIT; runs before ctx.Close

	// nil policy: STARTTLS when offered, plaintext otherwise.
	st, err = s.StartTLS(nil)
	fmt.Printf("starttls: tls=%v certificate-verified=%v %s %s (err: %v)\n",
		st.TLS, st.CertVerified, st.TLSVersion, st.TLSError, err)
	if err != nil {
		os.Exit(75)
	}
	failed := 0
	for i := 1; i <= count; i++ {
		st, err = s.Send(tlsmail.Message{
			From: "sender@tm.test",
			To:   []string{to},
			Data: []byte(fmt.Sprintf("Subject: message %d of %d\r\n\r\nOne session.\r\n", i, count)),
		})
		fmt.Printf("message %d: %s, %d %s, tls=%v, %.3f s\n", i, st.Result, st.Code, st.Message,
			st.TLS, st.SessionSeconds)
		if err != nil {
			failed++
		}
	}
	if failed > 0 {
		s.Close()
		ctx.Close()
		os.Exit(75)
	}
}
