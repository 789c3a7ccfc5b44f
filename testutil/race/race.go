// Package race says whether the race detector is on, for tests that count
// allocations: with it, sync.Pool drops items at random, so pooled memory
// is allocated again.
package race
