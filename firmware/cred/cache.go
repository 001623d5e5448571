package cred

import (
	"container/list"
	"sync"
)

// DefaultCacheSize is the capacity of a [Cache] made with NewCache(0) or
// used as a zero value.
const DefaultCacheSize = 256

// Cache holds verified credentials by kid, so that a peer that sent its
// credential once by value ({13: CWT}) can later name it by kid ({4: kid}).
// It holds at most its capacity of entries and evicts the least recently
// used one. It is safe for concurrent use; the zero value is an empty cache
// of DefaultCacheSize entries.
//
// A cached entry is not trusted as is: [Verifier] checks its root, kind,
// validity window and permissions again on every use.
type Cache struct {
	mu   sync.Mutex
	size int
	ll   *list.List               // front = most recently used; values are *Cert
	m    map[string]*list.Element // by string(kid)
}

// NewCache returns an empty cache of size entries (DefaultCacheSize if
// size <= 0).
func NewCache(size int) *Cache {
	c := &Cache{size: size}
	c.init()
	return c
}

func (c *Cache) init() {
	if c.m == nil {
		if c.size <= 0 {
			c.size = DefaultCacheSize
		}
		c.ll = list.New()
		c.m = make(map[string]*list.Element)
	}
}

// Put stores cert under its kid. If a credential with the same kid is
// already cached, the one with the later NotBefore is kept (the new one on a
// tie), so a replayed older credential cannot displace a renewed one.
// Put stores the pointer: the caller must not modify cert afterwards.
func (c *Cache) Put(cert *Cert) {
	if cert == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	key := string(cert.KID)
	if e, ok := c.m[key]; ok {
		old := e.Value.(*Cert)
		if !old.NotBefore.After(cert.NotBefore) {
			e.Value = cert
		}
		c.ll.MoveToFront(e)
		return
	}
	c.m[key] = c.ll.PushFront(cert)
	for c.ll.Len() > c.size {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, string(last.Value.(*Cert).KID))
	}
}

// Get returns the credential cached under kid, marking it recently used.
func (c *Cache) Get(kid []byte) (*Cert, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	e, ok := c.m[string(kid)]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*Cert), true
}

// Remove drops the credential cached under kid, if any.
func (c *Cache) Remove(kid []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	if e, ok := c.m[string(kid)]; ok {
		c.ll.Remove(e)
		delete(c.m, string(kid))
	}
}

// Len returns the number of cached credentials.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	return c.ll.Len()
}
