/* pydamon's per-sample access-check loop in C (optional; pure-Python fallback in _native.py).
 *
 * The same steps as the Python path of pydamon.ops.vaddr/paddr: pagemap -> PFN, kpageflags ->
 * THP head / LRU check, idle bitmap write at prepare time; idle bitmap read at check time.
 *
 * Two I/O back ends behind one batch primitive (batch_io), so both give the same results:
 * - a ring (io_uring, raw syscalls, no liburing): every phase of a sample is one submission and
 *   one wait, i.e. O(1) user/kernel transitions per sample instead of O(regions);
 * - none (ring == NULL): one pread/pwrite per 8-byte entry.
 * procfs and sysfs files lack FMODE_NOWAIT, so io_uring runs these operations in its io-wq
 * worker threads (threads of this process; their CPU time is this process's).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<linux/io_uring.h>)
#include <linux/io_uring.h>
#define HAVE_IO_URING 1
#endif
#endif

#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)
#define KPF_LRU 5
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
/* Folios are naturally aligned: the head of an order-k folio is pfn & ~(2^k - 1). */
#define MAX_FOLIO_ORDER 9

struct ring;
static int ring_broken(struct ring *r);
static void ring_batch(struct ring *r, int fd, int write, int64_t n, const uint64_t *index,
		       uint64_t *vals, int32_t *res);

/* Errors that say "this path could not do it", not "the entry cannot be read": redo them
 * synchronously so that the ring never changes a result. */
static int transient(int32_t res)
{
	return res == -EAGAIN || res == -EINTR || res == -ECANCELED || res == -EOPNOTSUPP ||
	       res == -ENOSYS;
}

/* For i < n: read (write == 0) or write the 8-byte entry index[i] of fd from/to vals[i].
 * A read that fails or comes up short leaves 0 in vals[i]. Returns the number of entries
 * transferred in full. */
static int64_t batch_io(struct ring *r, int fd, int write, int64_t n, const uint64_t *index,
			uint64_t *vals)
{
	int32_t *res = NULL;
	int64_t i, ok = 0;

	if (n <= 0)
		return 0;
	if (r)
		res = malloc((size_t)n * sizeof(*res));
	if (res)
		ring_batch(r, fd, write, n, index, vals, res);
	for (i = 0; i < n; i++) {
		int32_t got;

		if (res && !transient(res[i])) {
			got = res[i];
		} else if (write) {
			got = (int32_t)pwrite(fd, &vals[i], 8, (off_t)(index[i] * 8));
		} else {
			got = (int32_t)pread(fd, &vals[i], 8, (off_t)(index[i] * 8));
		}
		if (got == 8)
			ok++;
		else if (!write)
			vals[i] = 0;
	}
	free(res);
	return ok;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The sorted distinct bitmap words (pfn / 64) of the non-negative pfns; returns their count. */
static int64_t distinct_words(const int64_t *pfns, int64_t n, uint64_t *words)
{
	int64_t i, m = 0, k = 0;

	for (i = 0; i < n; i++)
		if (pfns[i] >= 0)
			words[m++] = (uint64_t)pfns[i] >> 6;
	qsort(words, (size_t)m, sizeof(*words), cmp_u64);
	for (i = 0; i < m; i++)
		if (!k || words[k - 1] != words[i])
			words[k++] = words[i];
	return k;
}

static int64_t find_word(const uint64_t *words, int64_t k, uint64_t w)
{
	int64_t lo = 0, hi = k - 1;

	while (lo <= hi) {
		int64_t mid = lo + (hi - lo) / 2;

		if (words[mid] == w)
			return mid;
		if (words[mid] < w)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* addrs: virtual addresses (pagemap_fd >= 0) or physical addresses (pagemap_fd < 0).
 * pfns[i]: the PFN whose idle bit tracks addrs[i]'s page, or -1 if page_idle cannot track it
 * (not present, PFN hidden, off the LRU lists). Sets the idle bits of those PFNs, one write
 * per 64-page bitmap word; returns the number of words written, -1 if out of memory, -2 if
 * the ring failed (the results are complete all the same: redone synchronously). */
int64_t pydamon_prepare(struct ring *r, int pagemap_fd, int kpf_fd, int bitmap_fd,
			const int64_t *addrs, int64_t n, int64_t *pfns)
{
	uint64_t *index = malloc((size_t)(n > 0 ? n : 1) * sizeof(*index));
	uint64_t *vals = malloc((size_t)(n > 0 ? n : 1) * sizeof(*vals));
	int64_t *slot = malloc((size_t)(n > 0 ? n : 1) * sizeof(*slot));
	int64_t i, m = 0, k, nr_tails, marked = -1;

	if (!index || !vals || !slot)
		goto out;
	/* (a) pagemap -> PFN */
	if (pagemap_fd >= 0) {
		for (i = 0; i < n; i++)
			index[i] = (uint64_t)addrs[i] >> 12;
		batch_io(r, pagemap_fd, 0, n, index, vals);
		for (i = 0; i < n; i++)
			pfns[i] = (vals[i] & PM_PRESENT) ? (int64_t)(vals[i] & PM_PFN_MASK) : -1;
	} else {
		for (i = 0; i < n; i++)
			pfns[i] = addrs[i] >> 12;
	}
	/* (b) kpageflags: THP tails to their head, off-LRU pages untrackable */
	for (i = 0; i < n; i++) {
		if (pfns[i] > 0) {
			index[m] = (uint64_t)pfns[i];
			slot[m++] = i;
		} else {
			pfns[i] = -1;
		}
	}
	batch_io(r, kpf_fd, 0, m, index, vals);
	nr_tails = 0;
	for (k = 0; k < m; k++) {
		if (vals[k] >> KPF_COMPOUND_TAIL & 1) {
			slot[nr_tails++] = slot[k]; /* k >= nr_tails: slot[k] is read before reuse */
			pfns[slot[nr_tails - 1]] = -2 - pfns[slot[nr_tails - 1]];
		} else {
			pfns[slot[k]] = (vals[k] >> KPF_LRU & 1) ? pfns[slot[k]] : -1;
		}
	}
	/* (b') THP tails: their head is the first aligned candidate that is a head page; all
	 * candidates of all tails in one batch (the head's flags come with it) */
	if (nr_tails) {
		uint64_t *cand = malloc((size_t)nr_tails * MAX_FOLIO_ORDER * sizeof(*cand));
		uint64_t *cflags = malloc((size_t)nr_tails * MAX_FOLIO_ORDER * sizeof(*cflags));

		if (!cand || !cflags) {
			free(cand);
			free(cflags);
			for (k = 0; k < nr_tails; k++)
				pfns[slot[k]] = -1;
			goto mark;
		}
		for (k = 0; k < nr_tails; k++) {
			uint64_t pfn = (uint64_t)(-2 - pfns[slot[k]]);
			int j;

			for (j = 0; j < MAX_FOLIO_ORDER; j++)
				cand[k * MAX_FOLIO_ORDER + j] = pfn & ~((2ULL << j) - 1);
		}
		batch_io(r, kpf_fd, 0, nr_tails * MAX_FOLIO_ORDER, cand, cflags);
		for (k = 0; k < nr_tails; k++) {
			int64_t pfn = -2 - pfns[slot[k]];
			int j;

			pfns[slot[k]] = -1; /* no head found: a tail page, not on the LRU itself */
			for (j = 0; j < MAX_FOLIO_ORDER; j++) {
				uint64_t f = cflags[k * MAX_FOLIO_ORDER + j];

				if (f >> KPF_COMPOUND_HEAD & 1) {
					pfn = (int64_t)cand[k * MAX_FOLIO_ORDER + j];
					pfns[slot[k]] = (f >> KPF_LRU & 1) ? pfn : -1;
					break;
				}
			}
		}
		free(cand);
		free(cflags);
	}
mark:
	/* (c) one idle-bitmap write per distinct word */
	k = distinct_words(pfns, n, index);
	memset(vals, 0, (size_t)k * sizeof(*vals));
	for (i = 0; i < n; i++)
		if (pfns[i] >= 0)
			vals[find_word(index, k, (uint64_t)pfns[i] >> 6)] |= 1ULL << (pfns[i] & 63);
	marked = batch_io(r, bitmap_fd, 1, k, index, vals);
out:
	free(index);
	free(vals);
	free(slot);
	return ring_broken(r) ? -2 : marked;
}

/* accessed[i] = 1 if pfns[i]'s page is no longer idle; untrackable (-1) pages: 0.
 * One bitmap read per distinct 64-page word. Returns 0, -1 if out of memory, -2 if the ring
 * failed (the results are complete all the same). */
int pydamon_check(struct ring *r, int bitmap_fd, const int64_t *pfns, int64_t n,
		  uint8_t *accessed)
{
	uint64_t *words = malloc((size_t)(n > 0 ? n : 1) * sizeof(*words));
	uint64_t *vals = malloc((size_t)(n > 0 ? n : 1) * sizeof(*vals));
	int64_t i, k;

	if (!words || !vals) {
		free(words);
		free(vals);
		return -1;
	}
	k = distinct_words(pfns, n, words);
	batch_io(r, bitmap_fd, 0, k, words, vals);
	for (i = 0; i < n; i++) {
		uint64_t word;

		if (pfns[i] < 0) {
			accessed[i] = 0;
			continue;
		}
		word = vals[find_word(words, k, (uint64_t)pfns[i] >> 6)];
		accessed[i] = !(word >> (pfns[i] & 63) & 1);
	}
	free(words);
	free(vals);
	return ring_broken(r) ? -2 : 0;
}

/* -- one sample of a target, whole (the default path of vaddr) ----------------------------- */

/* splitmix64: the sampling-address draw; the state is the caller's (seeded from the context's
 * random generator, so a run is reproducible from its seed). */
static uint64_t next_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* damon_va_prepare_access_checks() for n regions at once: a uniformly random sampling address
 * in each [start, end) (damon_rand(); written to sampling_addr), then pydamon_prepare() on
 * them. Python's per-sample work shrinks to one call: under emulation every interpreted
 * operation costs tens of microseconds. */
int64_t pydamon_pick_prepare(struct ring *r, int pagemap_fd, int kpf_fd, int bitmap_fd,
			     const int64_t *start, const int64_t *end, int64_t n,
			     uint64_t *rng_state, int64_t *sampling_addr, int64_t *pfns)
{
	int64_t i;

	for (i = 0; i < n; i++) {
		uint64_t size = (uint64_t)(end[i] - start[i]);

		sampling_addr[i] = start[i] +
				   (int64_t)(((unsigned __int128)next_rand(rng_state) * size) >> 64);
	}
	return pydamon_prepare(r, pagemap_fd, kpf_fd, bitmap_fd, sampling_addr, n, pfns);
}

/* damon_update_region_access_rate() for n regions (Regions.update_access_rate in Python):
 * nr_accesses_bp is a pseudo moving sum over len_window samples, nr_accesses counts this
 * aggregation's hits. Both are updated in place; returns the highest nr_accesses. */
int64_t pydamon_update_rate(int64_t n, const uint8_t *accessed, int64_t *nr_accesses,
			    int64_t *nr_accesses_bp, const int64_t *last_nr_accesses,
			    int64_t len_window)
{
	int64_t i, max = 0;

	if (len_window < 1)
		len_window = 1;
	for (i = 0; i < n; i++) {
		int64_t hit = accessed[i] ? 1 : 0;
		int64_t bp = nr_accesses_bp[i] - last_nr_accesses[i] * 10000 / len_window + hit * 10000;

		nr_accesses_bp[i] = bp < 0 ? 0 : bp;
		nr_accesses[i] += hit;
		if (nr_accesses[i] > max)
			max = nr_accesses[i];
	}
	return max;
}

/* damon_va_check_accesses() for n regions at once: pydamon_check() on the PFNs prepared, then
 * pydamon_update_rate(). *max_nr_accesses: the highest nr_accesses. Returns as
 * pydamon_check(). */
int pydamon_check_update(struct ring *r, int bitmap_fd, const int64_t *pfns, int64_t n,
			 uint8_t *accessed, int64_t *nr_accesses, int64_t *nr_accesses_bp,
			 const int64_t *last_nr_accesses, int64_t len_window,
			 int64_t *max_nr_accesses)
{
	int ret = pydamon_check(r, bitmap_fd, pfns, n, accessed);

	if (ret == -1)
		return ret;
	*max_nr_accesses = pydamon_update_rate(n, accessed, nr_accesses, nr_accesses_bp,
					       last_nr_accesses, len_window);
	return ret;
}

/* -- io_uring ------------------------------------------------------------------------------ */

#ifdef HAVE_IO_URING

#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef SYS_io_uring_enter
#define SYS_io_uring_enter 426
#endif
#ifndef SYS_io_uring_register
#define SYS_io_uring_register 427
#endif

struct ring {
	int fd;
	unsigned entries;
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
	void *sq_map, *cq_map;
	size_t sq_map_sz, cq_map_sz, sqes_sz;
	/* set when the ring failed mid-use: batch_io then does everything synchronously */
	int broken;
};

/* A ring of `entries` slots; max_workers > 0 bounds io-wq to that many workers (the
 * operations here are "bounded" work: regular files); pin_workers keeps them on this thread's
 * allowed CPUs. NULL and *err = errno on failure. */
struct ring *pydamon_ring_open(unsigned entries, int max_workers, int pin_workers, int *err)
{
	struct io_uring_params p;
	struct ring *r = calloc(1, sizeof(*r));
	int fd;

	if (!r) {
		*err = ENOMEM;
		return NULL;
	}
	memset(&p, 0, sizeof(p));
#ifdef IORING_SETUP_SUBMIT_ALL
	p.flags = IORING_SETUP_SUBMIT_ALL;
#endif
	fd = (int)syscall(SYS_io_uring_setup, entries, &p);
	if (fd < 0 && errno == EINVAL && p.flags) { /* a kernel before 5.18 */
		memset(&p, 0, sizeof(p));
		fd = (int)syscall(SYS_io_uring_setup, entries, &p);
	}
	if (fd < 0) {
		*err = errno;
		free(r);
		return NULL;
	}
	r->fd = fd;
	r->entries = p.sq_entries;
	r->sq_map_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	r->cq_map_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if ((p.features & IORING_FEAT_SINGLE_MMAP) && r->cq_map_sz > r->sq_map_sz)
		r->sq_map_sz = r->cq_map_sz;
	r->sq_map = mmap(NULL, r->sq_map_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			 IORING_OFF_SQ_RING);
	if (r->sq_map == MAP_FAILED)
		goto fail;
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		r->cq_map = r->sq_map;
	} else {
		r->cq_map = mmap(NULL, r->cq_map_sz, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
		if (r->cq_map == MAP_FAILED) {
			r->cq_map = NULL;
			goto fail;
		}
	}
	r->sqes_sz = p.sq_entries * sizeof(struct io_uring_sqe);
	r->sqes = mmap(NULL, r->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
		       IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED) {
		r->sqes = NULL;
		goto fail;
	}
	r->sq_tail = (unsigned *)((char *)r->sq_map + p.sq_off.tail);
	r->sq_mask = (unsigned *)((char *)r->sq_map + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)((char *)r->sq_map + p.sq_off.array);
	r->cq_head = (unsigned *)((char *)r->cq_map + p.cq_off.head);
	r->cq_tail = (unsigned *)((char *)r->cq_map + p.cq_off.tail);
	r->cq_mask = (unsigned *)((char *)r->cq_map + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)((char *)r->cq_map + p.cq_off.cqes);
	if (max_workers > 0) {
		unsigned limits[2] = {(unsigned)max_workers, (unsigned)max_workers};

		/* best effort: without it the kernel picks the number of workers */
		syscall(SYS_io_uring_register, fd, IORING_REGISTER_IOWQ_MAX_WORKERS, limits, 2);
	}
	if (pin_workers) {
		cpu_set_t cpus;

		/* io-wq workers on the CPUs this thread may run on (a pinned monitor keeps its
		 * batches on its own CPU: no cross-CPU wake-ups); best effort */
		if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
			syscall(SYS_io_uring_register, fd, IORING_REGISTER_IOWQ_AFF, &cpus,
				sizeof(cpus));
	}
	return r;
fail:
	*err = errno;
	if (r->sq_map && r->sq_map != MAP_FAILED)
		munmap(r->sq_map, r->sq_map_sz);
	if (r->cq_map && r->cq_map != r->sq_map)
		munmap(r->cq_map, r->cq_map_sz);
	close(fd);
	free(r);
	return NULL;
}

void pydamon_ring_close(struct ring *r)
{
	if (!r)
		return;
	munmap(r->sqes, r->sqes_sz);
	if (r->cq_map != r->sq_map)
		munmap(r->cq_map, r->cq_map_sz);
	munmap(r->sq_map, r->sq_map_sz);
	close(r->fd);
	free(r);
}

static int ring_broken(struct ring *r)
{
	return r && r->broken;
}

/* res[i]: the result of entry i's read/write (-ECANCELED: not done, do it synchronously). */
static void ring_batch(struct ring *r, int fd, int write, int64_t n, const uint64_t *index,
		       uint64_t *vals, int32_t *res)
{
	int64_t done = 0, i;

	for (i = 0; i < n; i++)
		res[i] = -ECANCELED;
	while (done < n && !r->broken) {
		unsigned chunk = (unsigned)(n - done < r->entries ? n - done : r->entries);
		unsigned tail = *r->sq_tail, mask = *r->sq_mask, k, reaped = 0, to_submit = chunk;
		int retries = 0;

		for (k = 0; k < chunk; k++) {
			unsigned idx = (tail + k) & mask;
			struct io_uring_sqe *sqe = &r->sqes[idx];

			memset(sqe, 0, sizeof(*sqe));
			sqe->opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
			/* no inline attempt: these files cannot do non-blocking I/O anyway */
			sqe->flags = IOSQE_ASYNC;
			sqe->fd = fd;
			sqe->off = index[done + k] * 8;
			sqe->addr = (uint64_t)(uintptr_t)&vals[done + k];
			sqe->len = 8;
			sqe->user_data = (uint64_t)(done + k);
			r->sq_array[idx] = idx;
		}
		__atomic_store_n(r->sq_tail, tail + chunk, __ATOMIC_RELEASE);
		while (reaped < chunk) {
			unsigned head, ctail;
			long got = syscall(SYS_io_uring_enter, r->fd, to_submit, chunk - reaped,
					   IORING_ENTER_GETEVENTS, NULL, 0);

			if (got < 0) {
				if ((errno == EINTR || errno == EAGAIN || errno == EBUSY) &&
				    ++retries < 1000)
					continue;
				/* unusable from now on; what was not reaped is redone synchronously */
				r->broken = 1;
				return;
			}
			to_submit -= (unsigned)got < to_submit ? (unsigned)got : to_submit;
			head = *r->cq_head;
			ctail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
			for (; head != ctail; head++) {
				struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];

				if (cqe->user_data < (uint64_t)n)
					res[cqe->user_data] = cqe->res;
				reaped++;
			}
			__atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
		}
		done += chunk;
	}
}

#else /* no <linux/io_uring.h>: the synchronous path only */

struct ring *pydamon_ring_open(unsigned entries, int max_workers, int pin_workers, int *err)
{
	(void)entries;
	(void)max_workers;
	(void)pin_workers;
	*err = ENOSYS;
	return NULL;
}

void pydamon_ring_close(struct ring *r)
{
	(void)r;
}

static int ring_broken(struct ring *r)
{
	(void)r;
	return 0;
}

static void ring_batch(struct ring *r, int fd, int write, int64_t n, const uint64_t *index,
		       uint64_t *vals, int32_t *res)
{
	int64_t i;

	(void)r, (void)fd, (void)write, (void)index, (void)vals;
	for (i = 0; i < n; i++)
		res[i] = -ENOSYS;
}

#endif
