// Command peer_go is the Go baseline for `nox -s bench`: the HTTP contract of
// `trio-sse serve` on Go's net/http, standard library only.
//
//	go build -o peer_go . && ./peer_go [-host 127.0.0.1] [-port 0]
//
// Routes, as `trio-sse serve` and benchmarks/peer_starlette.py answer them:
//
//   - GET /events/<topic>: a text/event-stream of the topic, each event with its
//     id, written and flushed as it comes; a ": heartbeat" comment every 15 s.
//   - POST /events/<topic>: body {"data": ...}; answers 202 {"id": "<id>"}.
//   - GET /stats: {"subscribers", "topics", "published", "delivered", "dropped",
//     "subscribers_per_topic"}.
//
// The fan-out is what a Go programmer writes with the standard library: one
// buffered channel per subscriber, filled by the publish handler without
// blocking, drained by the subscriber's handler goroutine. Each event is
// encoded once per publish and the same bytes go to every subscriber. Unlike
// sse-starlette's unbounded asyncio.Queue, a Go channel has a fixed capacity;
// like trio-sse (--queue-size, 256 by default), a subscriber whose channel is
// full is dropped: its stream ends and it counts in "dropped".
//
// Once listening, it prints "Running on http://HOST:PORT" on stderr, the line
// the benchmark runner waits for. Pinned to one CPU with taskset, the Go
// runtime sets GOMAXPROCS to 1 from the affinity mask.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// frame is one encoded event, shared by every subscriber it is sent to. The
// channels carry pointers: 8 bytes per slot, allocated when a subscriber joins.
type frame struct {
	data []byte
}

type subscriber struct {
	topic  string
	frames chan *frame
	// Closed by the publisher that found frames full; what is queued is discarded.
	dropped chan struct{}
}

// hub holds the subscribers by topic and the counters /stats reports. One mutex
// guards all of it; a publish holds it while it fans out, so ids reach every
// subscriber in order.
type hub struct {
	queueSize int

	mu          sync.Mutex
	subscribers map[string]map[*subscriber]struct{}
	topics      map[string]struct{} // every topic published to
	lastID      uint64
	published   uint64
	delivered   uint64
	dropped     uint64
}

func newHub(queueSize int) *hub {
	return &hub{
		queueSize:   queueSize,
		subscribers: make(map[string]map[*subscriber]struct{}),
		topics:      make(map[string]struct{}),
	}
}

func (h *hub) subscribe(topic string) *subscriber {
	sub := &subscriber{
		topic:   topic,
		frames:  make(chan *frame, h.queueSize),
		dropped: make(chan struct{}),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subscribers[topic]
	if set == nil {
		set = make(map[*subscriber]struct{})
		h.subscribers[topic] = set
	}
	set[sub] = struct{}{}
	return sub
}

// remove takes sub out of its topic; the caller holds h.mu.
func (h *hub) remove(sub *subscriber) bool {
	set := h.subscribers[sub.topic]
	if _, ok := set[sub]; !ok {
		return false
	}
	delete(set, sub)
	if len(set) == 0 {
		delete(h.subscribers, sub.topic)
	}
	return true
}

func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.remove(sub)
}

// publish encodes the event once, gives it the next id and queues it for every
// subscriber of topic, dropping those whose channel is full.
func (h *hub) publish(topic, data string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastID++
	id := strconv.FormatUint(h.lastID, 10)
	f := &frame{data: encodeEvent(id, data)}
	h.topics[topic] = struct{}{}
	h.published++
	for sub := range h.subscribers[topic] {
		select {
		case sub.frames <- f:
			h.delivered++
		default:
			h.remove(sub)
			close(sub.dropped)
			h.dropped++
		}
	}
	return id
}

type stats struct {
	Subscribers         int            `json:"subscribers"`
	Topics              int            `json:"topics"`
	Published           uint64         `json:"published"`
	Delivered           uint64         `json:"delivered"`
	Dropped             uint64         `json:"dropped"`
	SubscribersPerTopic map[string]int `json:"subscribers_per_topic"`
}

func (h *hub) stats() stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := stats{
		Published:           h.published,
		Delivered:           h.delivered,
		Dropped:             h.dropped,
		SubscribersPerTopic: make(map[string]int, len(h.subscribers)),
	}
	topics := len(h.topics)
	for topic, set := range h.subscribers {
		s.SubscribersPerTopic[topic] = len(set)
		s.Subscribers += len(set)
		if _, published := h.topics[topic]; !published {
			topics++
		}
	}
	s.Topics = topics
	return s
}

// encodeEvent writes one SSE event: its id, then one data line per line of data.
func encodeEvent(id, data string) []byte {
	var b strings.Builder
	b.Grow(len(id) + len(data) + 16)
	b.WriteString("id: ")
	b.WriteString(id)
	b.WriteByte('\n')
	// A line ends at CRLF, CR or LF; each line of the data is a data field.
	data = strings.ReplaceAll(data, "\r\n", "\n")
	data = strings.ReplaceAll(data, "\r", "\n")
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return []byte(b.String())
}

var heartbeatComment = []byte(": heartbeat\n")

type server struct {
	hub       *hub
	heartbeat time.Duration
}

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	topic := strings.TrimPrefix(r.URL.Path, "/events/")
	if topic == "" || strings.Contains(topic, "/") {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.stream(w, r, topic)
	case http.MethodPost:
		s.publish(w, r, topic)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (s *server) stream(w http.ResponseWriter, r *http.Request, topic string) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	header := w.Header()
	header.Set("Content-Type", "text/event-stream; charset=utf-8")
	header.Set("Cache-Control", "no-cache")
	header.Set("X-Accel-Buffering", "no")
	sub := s.hub.subscribe(topic)
	defer s.hub.unsubscribe(sub)
	// The head goes out now, not with the first event.
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	var ticks <-chan time.Time
	if s.heartbeat > 0 {
		ticker := time.NewTicker(s.heartbeat)
		defer ticker.Stop()
		ticks = ticker.C
	}
	// Cancelled when the client goes away (FIN or RST) or the server closes.
	done := r.Context().Done()
	for {
		var chunk []byte
		select {
		case <-done:
			return
		case <-sub.dropped:
			return
		case f := <-sub.frames:
			// select picks at random among ready cases: a dropped subscriber
			// writes nothing more, even if frames are still queued.
			select {
			case <-sub.dropped:
				return
			default:
			}
			chunk = f.data
		case <-ticks:
			chunk = heartbeatComment
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		flusher.Flush()
	}
}

// maxBody bounds a publish body, as trio-sse serve's --max-body does.
const maxBody = 1 << 20

func (s *server) publish(w http.ResponseWriter, r *http.Request, topic string) {
	var body struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&body); err != nil {
		http.Error(w, "body must be JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	if body.Data == nil {
		http.Error(w, `body must have "data"`, http.StatusBadRequest)
		return
	}
	// A string is sent as its text; any other JSON value as its JSON text.
	var data string
	if err := json.Unmarshal(body.Data, &data); err != nil {
		data = string(body.Data)
	}
	id := s.hub.publish(topic, data)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, http.StatusOK, s.hub.stats())
}

func writeJSON(w http.ResponseWriter, status int, value any) {
	body, err := json.Marshal(value)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client may be gone; nothing to do about it
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 0, "port to listen on; 0 picks a free one")
	queueSize := flag.Int("queue-size", 256, "events a subscriber may lag before it is dropped")
	heartbeat := flag.Duration("heartbeat", 15*time.Second, "interval of heartbeat comments; 0 disables")
	flag.Parse()
	if *queueSize < 1 {
		fmt.Fprintln(os.Stderr, "peer_go: -queue-size must be >= 1")
		os.Exit(2)
	}

	s := &server{hub: newHub(*queueSize), heartbeat: *heartbeat}
	mux := http.NewServeMux()
	mux.HandleFunc("/events/", s.events)
	mux.HandleFunc("/stats", s.stats)

	// Listening before the address is printed, so that no client is refused
	// meanwhile. The backlog is the kernel's somaxconn (Go asks for the most).
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "peer_go: cannot listen on %s:%d: %v\n", *host, *port, err)
		os.Exit(1)
	}
	addr := listener.Addr().(*net.TCPAddr)
	fmt.Fprintf(os.Stderr, "Running on http://%s:%d (Go net/http, %s)\n",
		addr.IP, addr.Port, runtime.Version())

	// net/http's defaults otherwise: no timeouts, as streams are long-lived.
	srv := &http.Server{Handler: mux, ErrorLog: log.New(os.Stderr, "peer_go: ", log.LstdFlags)}
	if err := srv.Serve(listener); err != nil {
		fmt.Fprintf(os.Stderr, "peer_go: %v\n", err)
		os.Exit(1)
	}
}
