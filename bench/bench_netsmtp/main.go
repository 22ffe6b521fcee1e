// Command bench_netsmtp is the Go net/smtp side of the libtlsmail benchmark
// (see bench/README.md).  Same arguments and JSON output as bench_tm and
// bench_smtplib.py:
//
//	bench_netsmtp --host NAME --addr IP --port N --ca FILE --count N
//	              --mode reused|new|resume [--size BYTES] [--tls12] [--max-seconds S]
//
// reused: one connection (dial, EHLO, STARTTLS, EHLO outside the
// measurement), then --count Mail/Rcpt/Data transactions; new: --count
// times dial, EHLO, STARTTLS, EHLO, transaction, QUIT; resume: like new with
// a tls.ClientSessionCache.  The TCP connection goes to --addr, the
// certificate is verified against --ca for the name --host.  CPU is
// getrusage(RUSAGE_SELF) user+sys around the loop (all threads of the
// process, the Go runtime's included).  Standard library only.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// makeMessage builds the benchmark message, byte-identical to bench_tm's.
func makeMessage(size int) []byte {
	hdr := "From: <bench@bench.tm.test>\r\nTo: <rcpt@bench.tm.test>\r\n" +
		"Subject: libtlsmail benchmark\r\n\r\n"
	const alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := []byte(hdr)
	for k := 0; len(out) < size; k++ {
		for j := 0; j < 76; j++ {
			out = append(out, alpha[(k+j)%36])
		}
		out = append(out, '\r', '\n')
	}
	if size >= len(hdr)+2 {
		out = out[:size]
		out[size-2], out[size-1] = '\r', '\n'
	}
	return out
}

func cpu() (total, sys float64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	u := float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6
	s := float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
	return u + s, s
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	k := int(p/100*float64(len(v)) + 0.999999)
	if k < 1 {
		k = 1
	}
	if k > len(v) {
		k = len(v)
	}
	return v[k-1]
}

type state struct {
	version, cipher string
	resumed         int
}

func main() {
	host := flag.String("host", "mx-valid.tm.test", "MX name (certificate name)")
	addr := flag.String("addr", "", "address to connect to")
	port := flag.Int("port", 0, "SMTP port")
	ca := flag.String("ca", "", "CA bundle (PEM)")
	flag.String("dns", "", "unused (symmetry with bench_tm)")
	count := flag.Int("count", 100, "messages")
	mode := flag.String("mode", "reused", "reused|new|resume")
	size := flag.Int("size", 10240, "message size")
	tls12 := flag.Bool("tls12", false, "cap TLS at 1.2")
	maxSeconds := flag.Float64("max-seconds", 30, "stop the loop early after this long")
	flag.Parse()
	if *addr == "" || *port == 0 || *ca == "" {
		flag.Usage()
		os.Exit(64)
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conf := &tls.Config{ServerName: *host, RootCAs: pool}
	if *tls12 {
		conf.MaxVersion = tls.VersionTLS12
	}
	if *mode == "resume" {
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(16)
	}
	msg := makeMessage(*size)
	target := net.JoinHostPort(*addr, strconv.Itoa(*port))
	const from, rcpt, helo = "bench@bench.tm.test", "rcpt@bench.tm.test", "bench.tm.test"
	var st state

	open := func() (*smtp.Client, error) {
		conn, err := net.DialTimeout("tcp", target, 20*time.Second)
		if err != nil {
			return nil, err
		}
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		c, err := smtp.NewClient(conn, *host)
		if err != nil {
			conn.Close()
			return nil, err
		}
		if err = c.Hello(helo); err == nil {
			err = c.StartTLS(conf) // says EHLO again over TLS
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		if cs, ok := c.TLSConnectionState(); ok {
			st.version = map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[cs.Version]
			st.cipher = tls.CipherSuiteName(cs.CipherSuite)
			if cs.DidResume {
				st.resumed++
			}
		}
		return c, nil
	}
	send := func(c *smtp.Client) error {
		if err := c.Mail(from); err != nil {
			return err
		}
		if err := c.Rcpt(rcpt); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err = w.Write(msg); err != nil {
			return err
		}
		return w.Close() // writes the final dot, reads the 250
	}

	lat := make([]float64, 0, *count)
	ok := 0
	errText := ""
	var c0, s0, c1, s1 float64
	var t0, t1 time.Time
	if *mode == "reused" {
		c, err := open()
		if err != nil {
			errText = err.Error()
		} else {
			c0, s0 = cpu()
			t0 = time.Now()
			for i := 0; i < *count; i++ {
				t := time.Now()
				if err = send(c); err != nil {
					errText = err.Error()
					break
				}
				lat = append(lat, time.Since(t).Seconds())
				ok++
				if time.Since(t0).Seconds() > *maxSeconds {
					break
				}
			}
			t1 = time.Now()
			c1, s1 = cpu()
			c.Quit()
		}
	} else {
		c0, s0 = cpu()
		t0 = time.Now()
		for i := 0; i < *count; i++ {
			t := time.Now()
			c, err := open()
			if err == nil {
				err = send(c)
				if err == nil {
					err = c.Quit()
				} else {
					c.Close()
				}
			}
			if err != nil {
				errText = err.Error()
				break
			}
			lat = append(lat, time.Since(t).Seconds())
			ok++
			if time.Since(t0).Seconds() > *maxSeconds {
				break
			}
		}
		t1 = time.Now()
		c1, s1 = cpu()
	}
	sort.Float64s(lat)
	cpuS := c1 - c0
	wall := t1.Sub(t0).Seconds()
	perMsg, rate, max := 0.0, 0.0, 0.0
	if ok > 0 {
		perMsg = cpuS / float64(ok) * 1e6
		max = lat[len(lat)-1] * 1e3
	}
	if wall > 0 {
		rate = float64(ok) / wall
	}
	full := ok - st.resumed
	if *mode == "reused" {
		full = 1
	}
	out := map[string]interface{}{
		"client": "net/smtp", "mode": *mode, "threads": 1, "count": *count, "ok": ok,
		"size": len(msg), "cpu_s": cpuS, "sys_s": s1 - s0, "cpu_per_msg_us": perMsg,
		"wall_s": wall, "msgs_per_s": rate,
		"lat_ms":          map[string]float64{"p50": pct(lat, 50) * 1e3, "p90": pct(lat, 90) * 1e3, "max": max},
		"full_handshakes": full, "tls": st.version != "", "verified": st.version != "",
		"tls_version": st.version, "cipher": st.cipher,
		"runtime": runtime.Version(), "error": errText,
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	if ok == 0 || errText != "" {
		os.Exit(1)
	}
}
