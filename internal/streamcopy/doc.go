// Package streamcopy copies bytes that another CPU will read next: its one
// job is to write a message into shared memory with non-temporal (streaming)
// stores, which go to memory instead of staying dirty in the writer's cache,
// so that the peer's core reads them at memory speed rather than line by
// line from ours. Go's own copy does this only from 1 MiB on.
package streamcopy
