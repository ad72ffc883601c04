// Command streamread is the readers of test/bench's part E: -readers live-stream clients of
// cmd/pipeline's stream route (one HTTPS connection each, as separate users would open;
// the pipeline's self-signed certificate is not verified: loopback) reading the pcap stream
// into io.Discard as fast as they can, counting the records, and/or a Prometheus-like
// scraper of its /metrics every -scrape-interval.
//
//	streamread [-url https://127.0.0.1:P/api/v1/captures/bench/pipeline/stream -readers N]
//	           [-scrape http://127.0.0.1:Q/metrics -scrape-interval 100ms]
//
// Once every reader has its 200 and the stream's pcap file header, and the first scrape
// answered, it prints "streamread: ready" on stderr. It ends when every stream has ended
// and, with -scrape, on SIGINT or SIGTERM (which also stops the scraping; readers still
// reading get -wait more), and prints one JSON object (see result) on stdout. A stream that
// ends without the chunked response's end (an aborted connection: the agent's cut-off of
// a reader that fell behind) counts as cut.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type reader struct {
	Packets uint64 `json:"packets"` // pcap records read
	Bytes   uint64 `json:"bytes"`   // of the stream, headers included
	Ended   string `json:"ended"`   // eof (the capture ended it), cut (aborted), stopped (-wait passed), error (no stream)
	Error   string `json:"error,omitempty"`
}

type result struct {
	Readers      []reader `json:"readers"`
	Packets      uint64   `json:"packets"` // all readers
	Bytes        uint64   `json:"bytes"`
	Cut          int      `json:"cut"`
	Failed       int      `json:"failed"` // no stream (refused, or an error other than a cut)
	Scrapes      int      `json:"scrapes"`
	ScrapeErrors int      `json:"scrape_errors"`
	ScrapeBytes  int      `json:"scrape_bytes"` // of the last scrape
	ScrapeMeanMS float64  `json:"scrape_mean_ms"`
	ScrapeMaxMS  float64  `json:"scrape_max_ms"`
	Ticks        uint64   `json:"ticks"` // utime+stime of this process, clock ticks
	Error        string   `json:"error,omitempty"`
}

func main() {
	url := flag.String("url", "", "the live stream's URL")
	n := flag.Int("readers", 0, "live stream readers")
	scrape := flag.String("scrape", "", "the /metrics URL to scrape")
	interval := flag.Duration("scrape-interval", 100*time.Millisecond, "scrape interval")
	wait := flag.Duration("wait", 15*time.Second, "after SIGINT: how long readers may still read")
	flag.Parse()
	if (*n > 0) == (*url == "") || (*n == 0 && *scrape == "") {
		fmt.Fprintln(os.Stderr, "streamread: -url with -readers N > 0, and/or -scrape, are required")
		os.Exit(2)
	}
	r := run(*url, *n, *scrape, *interval, *wait)
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "streamread:", err)
		os.Exit(1)
	}
	if r.Error != "" {
		fmt.Fprintln(os.Stderr, "streamread:", r.Error)
		os.Exit(1)
	}
}

func run(url string, n int, scrapeURL string, interval, wait time.Duration) result {
	var r result
	sig, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background()) // the readers' requests
	defer cancel()

	r.Readers = make([]reader, n)
	ready := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			read(ctx, url, &r.Readers[i], ready)
		}()
	}
	var errs []error
	for range n {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	var sc scraper
	scrapeDone := make(chan struct{})
	if scrapeURL != "" {
		sc.client = &http.Client{Timeout: 10 * time.Second}
		if err := sc.once(scrapeURL); err != nil {
			errs = append(errs, fmt.Errorf("first scrape: %w", err))
		}
		go func() {
			defer close(scrapeDone)
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-sig.Done():
					return
				case <-t.C:
					_ = sc.once(scrapeURL) // counted
				}
			}
		}()
	} else {
		close(scrapeDone)
	}
	if len(errs) == 0 {
		fmt.Fprintln(os.Stderr, "streamread: ready")
	} else {
		r.Error = errors.Join(errs...).Error()
		fmt.Fprintln(os.Stderr, "streamread: not ready:", r.Error)
	}

	readersDone := make(chan struct{})
	go func() { wg.Wait(); close(readersDone) }()
	if scrapeURL != "" {
		<-sig.Done()
	}
	select {
	case <-readersDone:
	case <-sig.Done():
		select {
		case <-readersDone:
		case <-time.After(wait):
			cancel()
			<-readersDone
		}
	}
	<-scrapeDone
	for _, rd := range r.Readers {
		r.Packets += rd.Packets
		r.Bytes += rd.Bytes
		switch rd.Ended {
		case "cut":
			r.Cut++
		case "error":
			r.Failed++
		}
	}
	r.Scrapes, r.ScrapeErrors, r.ScrapeBytes = sc.n, sc.errors, sc.lastBytes
	if sc.n > 0 {
		r.ScrapeMeanMS = sc.total.Seconds() * 1000 / float64(sc.n)
		r.ScrapeMaxMS = sc.max.Seconds() * 1000
	}
	r.Ticks, _ = selfTicks()
	return r
}

// read is one reader: the stream's header (then it reports on ready), then records until
// the stream ends.
func read(ctx context.Context, url string, rd *reader, ready chan<- error) {
	reported := false
	report := func(err error) {
		if !reported {
			reported = true
			ready <- err
		}
	}
	fail := func(err error) {
		rd.Ended, rd.Error = "error", err.Error()
		report(err)
	}
	// a connection of its own, HTTP/1.1 (as curl or a port-forwarded client would)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true} //nolint:gosec // loopback bench, self-signed
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fail(err)
		return
	}
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err = (&http.Client{Transport: tr}).Do(req)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		fail(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		fail(fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b))))
		return
	}
	br := bufio.NewReaderSize(resp.Body, 256<<10)
	var hdr [24]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		fail(fmt.Errorf("pcap header: %w", err))
		return
	}
	rd.Bytes += 24
	report(nil)
	var rec [16]byte
	for {
		_, err := io.ReadFull(br, rec[:])
		if err == nil {
			_, err = br.Discard(int(binary.LittleEndian.Uint32(rec[8:12])))
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF): // between records, after the chunked end: the capture ended
			rd.Ended = "eof"
			return
		case ctx.Err() != nil: // we stopped reading (-wait)
			rd.Ended, rd.Error = "stopped", err.Error()
			return
		default: // the connection was aborted: cut off
			rd.Ended, rd.Error = "cut", err.Error()
			return
		}
		rd.Packets++
		rd.Bytes += 16 + uint64(binary.LittleEndian.Uint32(rec[8:12]))
	}
}

// scraper GETs /metrics and reads the whole answer, as Prometheus does.
type scraper struct {
	client     *http.Client
	n, errors  int
	lastBytes  int
	total, max time.Duration
}

func (s *scraper) once(url string) error {
	t0 := time.Now()
	resp, err := s.client.Get(url)
	if err == nil {
		var b int64
		b, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = errors.New(resp.Status)
		}
		s.lastBytes = int(b)
	}
	d := time.Since(t0)
	s.n++
	s.total += d
	s.max = max(s.max, d)
	if err != nil {
		s.errors++
	}
	return err
}

// selfTicks returns utime+stime of this process from /proc/self/stat, in clock ticks.
func selfTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/self/stat: %d fields", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	return u + st, errors.Join(err1, err2)
}
