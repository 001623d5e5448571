package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
)

// Errors; match with errors.Is.
var (
	// ErrInUse is returned by Start when another process is serving on the
	// socket path (a second gatewayd).
	ErrInUse = errors.New("admin socket in use")
	// ErrUnavailable is returned by the client functions when nothing
	// serves on the socket (gatewayd is not running).
	ErrUnavailable = errors.New("gatewayd admin socket not available")
)

// Backuper is what the server needs of the database.
type Backuper interface {
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// Options configures a Server.
type Options struct {
	// Socket is the path to listen on. Its directory is created mode 0700
	// if missing.
	Socket string
	// DB serves /v1/backup.
	DB Backuper
	// Status, if set, serves /v1/status as JSON.
	Status func() any
	// Logger; nil discards.
	Logger *slog.Logger
	// AllowUID is the one non-root user allowed (default: our own uid).
	AllowUID *uint32

	// peerUID is a test seam: the uid of a connection's peer.
	peerUID func(net.Conn) int64
}

// Server serves the admin socket. Start it, then Close it.
type Server struct {
	opts Options
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	wg   sync.WaitGroup
	once sync.Once
}

// New returns a Server that is not yet listening.
func New(opts Options) (*Server, error) {
	if opts.Socket == "" || opts.DB == nil {
		return nil, errors.New("admin: Socket and DB are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AllowUID == nil {
		u := uint32(os.Getuid())
		opts.AllowUID = &u
	}
	if opts.peerUID == nil {
		opts.peerUID = peerUID
	}
	return &Server{opts: opts, log: opts.Logger.With("subsystem", "admin")}, nil
}

type credKey struct{}

// Start listens on the socket and serves until Close. A stale socket file
// left by a crashed daemon is replaced; a live one is ErrInUse.
func (s *Server) Start() error {
	dir := filepath.Dir(s.opts.Socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if st, err := os.Lstat(s.opts.Socket); err == nil {
		if st.Mode()&fs.ModeSocket == 0 {
			return fmt.Errorf("admin: %s exists and is not a socket; remove it", s.opts.Socket)
		}
		if c, err := net.DialTimeout("unix", s.opts.Socket, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("admin: %s: %w (is another gatewayd running?)", s.opts.Socket, ErrInUse)
		}
		if err := os.Remove(s.opts.Socket); err != nil {
			return fmt.Errorf("admin: remove stale socket: %w", err)
		}
	}
	// The socket is created with the umask's mode; 0177 makes it 0600 from
	// the start, with no window in which others could connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", s.opts.Socket)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("admin: listen: %w", err)
	}
	s.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/backup", s.backup)
	mux.HandleFunc("GET /v1/status", s.status)
	s.srv = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, credKey{}, s.opts.peerUID(c))
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin socket stopped", "err", err)
		}
	}()
	return nil
}

// peerUID returns the connecting process's uid, or -1 if unknown.
func peerUID(c net.Conn) int64 {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := int64(-1)
	_ = raw.Control(func(fd uintptr) {
		if cr, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			uid = int64(cr.Uid)
		}
	})
	return uid
}

func (s *Server) authorize(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, _ := r.Context().Value(credKey{}).(int64)
		if uid != 0 && uid != int64(*s.opts.AllowUID) {
			s.log.Warn("admin request refused", "reason", "uid_not_allowed", "uid", uid, "path", r.URL.Path)
			http.Error(w, "forbidden: only root and the gatewayd user may use this socket", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/vnd.gatewayd.bbolt")
	n, err := s.opts.DB.Backup(r.Context(), w)
	if err != nil {
		// Headers are gone once bytes flowed; the client's check of the
		// copy catches a cut stream. Before that, say so.
		if n == 0 {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		s.log.Error("online backup failed", "err", err, "bytes", n)
		return
	}
	s.log.Info("online backup served", "bytes", n)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.opts.Status == nil {
		http.Error(w, "no status", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.opts.Status())
}

// Close stops serving, waits for the serving goroutine and removes the
// socket. Requests in flight get up to 5 s to finish.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		if s.srv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = s.srv.Shutdown(ctx)
		s.wg.Wait()
		_ = os.Remove(s.opts.Socket)
	})
	return err
}

func client(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

func get(ctx context.Context, socket, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://gatewayd"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client(socket).Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, socket, err)
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("admin %s: %s: %s", path, resp.Status, b)
	}
	return resp, nil
}

// Backup asks the daemon serving socket for an online backup and saves it
// to dst with bonds.SaveBackup (checked before it is renamed in).
func Backup(ctx context.Context, socket, dst string) (int64, error) {
	resp, err := get(ctx, socket, "/v1/backup")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return bonds.SaveBackup(ctx, resp.Body, dst, bonds.Options{})
}

// Status fetches the daemon's status JSON.
func Status(ctx context.Context, socket string) ([]byte, error) {
	resp, err := get(ctx, socket, "/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}
