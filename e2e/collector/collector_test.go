package collector_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
)

// waitTimeout bounds every wait for an event; it is a hang guard, not a timing
// assertion: each wait returns as soon as the event happens.
const waitTimeout = 10 * time.Second

type key = collector.Key

func TestHandler(t *testing.T) {
	webShop := key{Svc: "web", Namespace: "shop"}
	apiBilling := key{Svc: "api", Namespace: "billing"}
	tests := []struct {
		name   string
		opts   collector.Options
		method string
		path   string // default collector.DefaultPath
		body   string

		wantStatus   int
		wantTotals   map[collector.Key]int
		wantTrailing int
		wantMessages int    // accepted messages, when not 1
		wantLines    string // what Out receives, when opts.Out is set by the test
	}{
		{
			name: "single object", method: http.MethodPost,
			body:       `{"count":3,"svc":"web","namespace":"shop"}`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 3},
			wantLines: `{"count":3,"svc":"web","namespace":"shop"}` + "\n",
		},
		{
			name: "unknown fields are ignored like the operator", method: http.MethodPost,
			body:       `{"count":1,"svc":"web","namespace":"shop","extra":true}`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 1},
		},
		{
			name: "GET is 405", method: http.MethodGet,
			wantStatus: http.StatusMethodNotAllowed,
		},
		{
			name: "PUT is 405", method: http.MethodPut,
			body:       `{"count":1,"svc":"web","namespace":"shop"}`,
			wantStatus: http.StatusMethodNotAllowed,
		},
		{
			name: "other path is 404", method: http.MethodPost, path: "/informer/other",
			body:       `{"count":1,"svc":"web","namespace":"shop"}`,
			wantStatus: http.StatusNotFound,
		},
		{
			name: "other path with GET is 404, path before method", method: http.MethodGet, path: "/",
			wantStatus: http.StatusNotFound,
		},
		{
			name: "configured path", opts: collector.Options{Path: "/counts"}, method: http.MethodPost, path: "/counts",
			body:       `{"count":1,"svc":"web","namespace":"shop"}`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 1},
		},
		{
			name: "default path refused when another is configured", opts: collector.Options{Path: "/counts"},
			method: http.MethodPost, body: `{"count":1,"svc":"web","namespace":"shop"}`,
			wantStatus: http.StatusNotFound,
		},
		{
			name: "array in single mode is 400", method: http.MethodPost,
			body:       `[{"count":1,"svc":"web","namespace":"shop"}]`,
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "array in batch mode", opts: collector.Options{Batch: true}, method: http.MethodPost,
			body:       ` [{"count":2,"svc":"web","namespace":"shop"},{"count":5,"svc":"api","namespace":"billing"},{"count":1,"svc":"web","namespace":"shop"}]`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 3, apiBilling: 5}, wantMessages: 3,
			wantLines: `{"count":2,"svc":"web","namespace":"shop"}` + "\n" +
				`{"count":5,"svc":"api","namespace":"billing"}` + "\n" +
				`{"count":1,"svc":"web","namespace":"shop"}` + "\n",
		},
		{
			name: "single object in batch mode", opts: collector.Options{Batch: true}, method: http.MethodPost,
			body:       `{"count":1,"svc":"api","namespace":"billing"}`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{apiBilling: 1},
		},
		{
			name: "empty array in batch mode is 400", opts: collector.Options{Batch: true}, method: http.MethodPost,
			body: `[]`, wantStatus: http.StatusBadRequest,
		},
		{
			name: "one bad element refuses the whole batch", opts: collector.Options{Batch: true}, method: http.MethodPost,
			body:       `[{"count":1,"svc":"web","namespace":"shop"},{"count":0,"svc":"api","namespace":"billing"}]`,
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "trailing object is counted in Stats, not in totals", method: http.MethodPost,
			body:       `{"count":1,"svc":"web","namespace":"shop"}{"count":7,"svc":"api","namespace":"billing"}`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 1}, wantTrailing: 1,
		},
		{
			name: "trailing newline-separated object", method: http.MethodPost,
			body:       "{\"count\":1,\"svc\":\"web\",\"namespace\":\"shop\"}\n{\"count\":7,\"svc\":\"web\",\"namespace\":\"shop\"}\n",
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 1}, wantTrailing: 1,
		},
		{
			name: "trailing garbage after a good object is still ignored like the operator", method: http.MethodPost,
			body:       `{"count":1,"svc":"web","namespace":"shop"} not json`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 1}, wantTrailing: 1,
		},
		{
			name: "trailing data after a batch", opts: collector.Options{Batch: true}, method: http.MethodPost,
			body:       `[{"count":1,"svc":"web","namespace":"shop"}][]`,
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 1}, wantTrailing: 1,
		},
		{
			name: "trailing whitespace is not trailing data", method: http.MethodPost,
			body:       "{\"count\":1,\"svc\":\"web\",\"namespace\":\"shop\"}\r\n\t ",
			wantStatus: http.StatusOK, wantTotals: map[collector.Key]int{webShop: 1},
		},
		{
			name: "trailing object after a refused one", method: http.MethodPost,
			body:       `{"count":0,"svc":"web","namespace":"shop"}{"count":1,"svc":"web","namespace":"shop"}`,
			wantStatus: http.StatusBadRequest, wantTrailing: 1,
		},
		{
			name: "body too large is 413", method: http.MethodPost,
			body:       webMsg + strings.Repeat(" ", collector.MaxBodySize),
			wantStatus: http.StatusRequestEntityTooLarge,
		},
		{name: "empty body", method: http.MethodPost, body: ``, wantStatus: http.StatusBadRequest},
		{name: "not JSON", method: http.MethodPost, body: `count=1`, wantStatus: http.StatusBadRequest},
		{name: "truncated object", method: http.MethodPost, body: `{"count":1,"svc":"web"`, wantStatus: http.StatusBadRequest},
		{name: "null", method: http.MethodPost, body: `null`, wantStatus: http.StatusBadRequest},
		{name: "string", method: http.MethodPost, body: `"web"`, wantStatus: http.StatusBadRequest},
		{name: "empty object", method: http.MethodPost, body: `{}`, wantStatus: http.StatusBadRequest},
		{name: "count 0", method: http.MethodPost, body: `{"count":0,"svc":"web","namespace":"shop"}`, wantStatus: http.StatusBadRequest},
		{name: "negative count", method: http.MethodPost, body: `{"count":-2,"svc":"web","namespace":"shop"}`, wantStatus: http.StatusBadRequest},
		{name: "count as a string", method: http.MethodPost, body: `{"count":"1","svc":"web","namespace":"shop"}`, wantStatus: http.StatusBadRequest},
		{name: "missing svc", method: http.MethodPost, body: `{"count":1,"namespace":"shop"}`, wantStatus: http.StatusBadRequest},
		{name: "empty namespace", method: http.MethodPost, body: `{"count":1,"svc":"web","namespace":""}`, wantStatus: http.StatusBadRequest},
		{name: "svc not a DNS label", method: http.MethodPost, body: `{"count":1,"svc":"web.shop","namespace":"shop"}`, wantStatus: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			opts := tt.opts
			opts.Out = &out
			c := collector.New(opts)
			srv := httptest.NewServer(c)
			defer srv.Close()

			path := tt.path
			if path == "" {
				path = collector.DefaultPath
			}
			req, err := http.NewRequest(tt.method, srv.URL+path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusOK && string(body) != collector.SuccessBody {
				t.Errorf("body = %q, want %q", body, collector.SuccessBody)
			}
			if tt.wantStatus == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", resp.Header.Get("Allow"))
			}
			if got := c.Totals(); !maps.Equal(got, tt.wantTotals) && !(len(got) == 0 && len(tt.wantTotals) == 0) {
				t.Errorf("Totals() = %v, want %v", got, tt.wantTotals)
			}

			s := c.Stats()
			want := collector.Stats{Requests: 1, Trailing: tt.wantTrailing, ByStatus: map[int]int{tt.wantStatus: 1}}
			if tt.wantStatus == http.StatusOK {
				want.Accepted = 1
				want.Messages = max(tt.wantMessages, 1)
			} else {
				want.Rejected = 1
			}
			if !equalStats(s, want) {
				t.Errorf("Stats() = %+v, want %+v", s, want)
			}
			if tt.wantStatus != http.StatusOK && len(c.Received()) != 0 {
				t.Errorf("Received() = %v after a refusal, want none", c.Received())
			}
			if tt.wantLines != "" && out.String() != tt.wantLines {
				t.Errorf("Out got %q, want %q", out.String(), tt.wantLines)
			}
			if tt.wantStatus != http.StatusOK && out.Len() != 0 {
				t.Errorf("Out got %q after a refusal, want nothing", out.String())
			}
		})
	}
}

func equalStats(a, b collector.Stats) bool {
	return a.Requests == b.Requests && a.Accepted == b.Accepted && a.Messages == b.Messages &&
		a.Rejected == b.Rejected && a.Injected == b.Injected && a.Abandoned == b.Abandoned &&
		a.Trailing == b.Trailing && maps.Equal(a.ByStatus, b.ByStatus)
}

// post sends one message body and returns the status, or the transport error.
func post(client *http.Client, url, body string) (int, error) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

const webMsg = `{"count":1,"svc":"web","namespace":"shop"}`

func TestFailWith(t *testing.T) {
	c := collector.New(collector.Options{})
	srv := httptest.NewServer(c)
	defer srv.Close()
	url := srv.URL + collector.DefaultPath

	steps := []struct {
		name       string
		failWith   int
		wantStatus int
	}{
		{name: "healthy", failWith: 0, wantStatus: http.StatusOK},
		{name: "503", failWith: http.StatusServiceUnavailable, wantStatus: http.StatusServiceUnavailable},
		{name: "500", failWith: http.StatusInternalServerError, wantStatus: http.StatusInternalServerError},
		{name: "out of range means healthy", failWith: 42, wantStatus: http.StatusOK},
		{name: "429", failWith: http.StatusTooManyRequests, wantStatus: http.StatusTooManyRequests},
		{name: "healthy again", failWith: 0, wantStatus: http.StatusOK},
	}
	for _, st := range steps {
		c.FailWith(st.failWith)
		got, err := post(srv.Client(), url, webMsg)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got != st.wantStatus {
			t.Fatalf("%s: status %d, want %d", st.name, got, st.wantStatus)
		}
	}
	if got, want := c.Totals()[key{Svc: "web", Namespace: "shop"}], 3; got != want {
		t.Errorf("total = %d, want %d: injected failures must not be counted", got, want)
	}
	s := c.Stats()
	if s.Injected != 3 || s.Accepted != 3 || s.Requests != 6 || s.Rejected != 0 {
		t.Errorf("Stats() = %+v, want 6 requests: 3 accepted, 3 injected", s)
	}
	if s.ByStatus[503] != 1 || s.ByStatus[500] != 1 || s.ByStatus[429] != 1 || s.ByStatus[200] != 3 {
		t.Errorf("ByStatus = %v", s.ByStatus)
	}
}

func TestDelay(t *testing.T) {
	t.Run("answers after the delay", func(t *testing.T) {
		c := collector.New(collector.Options{})
		srv := httptest.NewServer(c)
		defer srv.Close()
		c.Delay(5 * time.Millisecond)
		if got, err := post(srv.Client(), srv.URL+collector.DefaultPath, webMsg); err != nil || got != http.StatusOK {
			t.Fatalf("post = %d, %v; want 200", got, err)
		}
		if s := c.Stats(); s.Accepted != 1 {
			t.Errorf("Stats() = %+v, want 1 accepted", s)
		}
	})

	t.Run("cancelled client is abandoned and not counted", func(t *testing.T) {
		c := collector.New(collector.Options{})
		srv := httptest.NewServer(c)
		defer srv.Close()
		defer c.Close()    // first, so that a failed test releases the held request
		c.Delay(time.Hour) // only the client going away can end it

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+collector.DefaultPath, strings.NewReader(webMsg))
			resp, err := srv.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		waitFor(t, c, "the request to arrive", func(_ map[collector.Key]int, s collector.Stats) bool { return s.Requests == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("client error = %v, want context.Canceled", err)
		}
		waitFor(t, c, "the request to be abandoned", func(_ map[collector.Key]int, s collector.Stats) bool { return s.Abandoned == 1 })
		if s := c.Stats(); s.Accepted != 0 || len(c.Totals()) != 0 || len(s.ByStatus) != 0 {
			t.Errorf("after abandon: Stats() = %+v, Totals() = %v; want nothing counted", s, c.Totals())
		}
	})

	t.Run("Close releases a delayed request", func(t *testing.T) {
		c := collector.New(collector.Options{})
		if err := c.Start("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		c.Delay(time.Hour)
		errc := make(chan error, 1)
		go func() {
			_, err := post(&http.Client{Transport: &http.Transport{}}, c.URL(), webMsg)
			errc <- err
		}()
		waitFor(t, c, "the request to arrive", func(_ map[collector.Key]int, s collector.Stats) bool { return s.Requests == 1 })
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-errc; err == nil {
			t.Error("client got an answer from a closed collector, want an error")
		}
		waitFor(t, c, "the request to be abandoned", func(_ map[collector.Key]int, s collector.Stats) bool { return s.Abandoned == 1 })
		if len(c.Totals()) != 0 {
			t.Errorf("Totals() = %v, want nothing counted", c.Totals())
		}
	})
}

func TestPauseResume(t *testing.T) {
	c := collector.New(collector.Options{})
	if err := c.Resume(); err == nil {
		t.Error("Resume before Start succeeded, want an error")
	}
	if err := c.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start("127.0.0.1:0"); err == nil {
		t.Error("second Start succeeded, want an error")
	}
	addr := c.Addr()
	// Its own transport, so that no other test's pooled connection is reused.
	client := &http.Client{Transport: &http.Transport{}}

	if got, err := post(client, c.URL(), webMsg); err != nil || got != http.StatusOK {
		t.Fatalf("before Pause: %d, %v; want 200", got, err)
	}
	c.Pause()
	c.Pause() // idempotent
	// A pooled connection closed by Pause fails differently (see
	// TestPauseWithOpenConnection); here a new connection must be refused.
	client.CloseIdleConnections()
	if _, err := post(client, c.URL(), webMsg); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("while paused: err = %v, want connection refused", err)
	}
	if err := c.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if err := c.Resume(); err != nil {
		t.Fatalf("second Resume: %v, want nil (not paused)", err)
	}
	if c.Addr() != addr {
		t.Errorf("Addr() = %s after Resume, want the same %s", c.Addr(), addr)
	}
	if got, err := post(client, c.URL(), webMsg); err != nil || got != http.StatusOK {
		t.Fatalf("after Resume: %d, %v; want 200", got, err)
	}
	if got := c.Totals()[key{Svc: "web", Namespace: "shop"}]; got != 2 {
		t.Errorf("total = %d, want 2", got)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Resume(); err == nil {
		t.Error("Resume after Close succeeded, want an error")
	}
	client.CloseIdleConnections()
	if _, err := post(client, "http://"+addr+collector.DefaultPath, webMsg); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after Close: err = %v, want connection refused", err)
	}
}

func TestPauseWithOpenConnection(t *testing.T) {
	c := collector.New(collector.Options{})
	if err := c.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := &http.Client{Transport: &http.Transport{}} // keeps its connection open
	if got, err := post(client, c.URL(), webMsg); err != nil || got != http.StatusOK {
		t.Fatalf("before Pause: %d, %v", got, err)
	}
	c.Pause()
	// The pooled connection was closed by the server: the client must fail
	// (refused, or the reset connection), never reach the handler.
	if got, err := post(client, c.URL(), webMsg); err == nil {
		t.Fatalf("while paused with a pooled connection: status %d, want an error", got)
	}
	if s := c.Stats(); s.Requests != 1 {
		t.Errorf("Requests = %d, want 1: nothing may reach a paused collector", s.Requests)
	}
}

func TestConcurrentPosts(t *testing.T) {
	c := collector.New(collector.Options{Out: io.Discard})
	if err := c.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := `{"count":2,"svc":"web","namespace":"shop"}`
			if w%2 == 1 {
				body = `{"count":1,"svc":"api","namespace":"billing"}`
			}
			for range each {
				if got, err := post(http.DefaultClient, c.URL(), body); err != nil || got != http.StatusOK {
					t.Errorf("post = %d, %v", got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := map[collector.Key]int{
		{Svc: "web", Namespace: "shop"}:    workers / 2 * each * 2,
		{Svc: "api", Namespace: "billing"}: workers / 2 * each,
	}
	if got := c.Totals(); !maps.Equal(got, want) {
		t.Errorf("Totals() = %v, want %v", got, want)
	}
	if s := c.Stats(); s.Accepted != workers*each || s.Messages != workers*each {
		t.Errorf("Stats() = %+v, want %d accepted", s, workers*each)
	}
}

func TestWaitForContextDone(t *testing.T) {
	c := collector.New(collector.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.WaitFor(ctx, func(map[collector.Key]int, collector.Stats) bool { return false })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("WaitFor = %v, want context.Canceled", err)
	}
}

func waitFor(t *testing.T, c *collector.Collector, what string, cond func(map[collector.Key]int, collector.Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.WaitFor(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (Stats: %+v)", what, err, c.Stats())
	}
}
