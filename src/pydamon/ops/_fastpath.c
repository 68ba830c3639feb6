/* pydamon's per-sample access-check loop in C (optional; pure-Python fallback in _native.py).
 *
 * The same steps as the Python path of pydamon.ops._native: pagemap -> PFN, kpageflags -> THP
 * head / LRU check (only where a huge page may be), idle bitmap write at prepare time; idle
 * bitmap read at check time (then kpageflags of the frames not checked at prepare that read
 * "accessed"). Entries are sorted; one pread/pwrite per run of adjacent 8-byte entries, so
 * frames in one 64-frame bitmap word share its read and its write.
 *
 * Built by `pip install` as the extension module pydamon.ops._fastpath (setup.py; optional: a
 * failed compile installs the pure-Python path) and called through ctypes, never compiled at run
 * time. No Python.h: a host with a compiler but no Python headers builds it too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)
#define KPF_LRU 5
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
/* Folios are naturally aligned: the head of an order-k folio is pfn & ~(2^k - 1). */
#define MAX_FOLIO_ORDER 9
/* pfns[i] with this bit: a frame whose kpageflags were not read at prepare time (its address
 * lies where no huge page was seen). page_idle reads a frame it cannot track (off the LRU, a
 * THP tail) as "not idle", the same as "accessed": so such a frame's flags are read at check
 * time, only when its bit reads "not idle". */
#define PFN_UNVERIFIED (1LL << 62)
#define PFN_BITS(p) ((uint64_t)(p) & PM_PFN_MASK)
/* pfns[i] after a check that found an unverified frame to be a THP tail: its address lies in
 * a huge page the caller did not know of (tells the caller to read flags there from now on). */
#define PFN_TAIL_SEEN (-3)
/* entries read in one go at most; runs of adjacent entries share one system call */
#define RUN_MAX 512

/* stats[STAT_SYSCALLS] counts the preads and pwrites made (the caller's counters) */
enum { STAT_SYSCALLS, STAT_TAILS_SEEN, STAT_REGION_SAMPLES, NR_STATS };

struct entry {
	uint64_t index;
	int64_t slot;
};

static int cmp_entry(const void *a, const void *b)
{
	uint64_t x = ((const struct entry *)a)->index, y = ((const struct entry *)b)->index;

	return x < y ? -1 : x > y;
}

/* vals[i] = the 8-byte entry index[i] of fd, for i < n (0 where it cannot be read). Entries
 * are read in ascending order, one pread per run of entries at most max_gap + 1 apart (the
 * gaps are read and dropped: cheaper than a system call for pagemap and kpageflags). */
static int batch_read(int fd, int64_t n, const uint64_t *index, uint64_t *vals, int64_t max_gap,
		      int64_t *stats)
{
	struct entry *e = malloc((size_t)(n > 0 ? n : 1) * sizeof(*e));
	uint64_t buf[RUN_MAX];
	int64_t i, j, k;

	if (!e)
		return -1;
	for (i = 0; i < n; i++) {
		e[i].index = index[i];
		e[i].slot = i;
	}
	qsort(e, (size_t)n, sizeof(*e), cmp_entry);
	for (i = 0; i < n; i = j) {
		uint64_t first = e[i].index;
		ssize_t got;
		int64_t nr_got;

		for (j = i + 1; j < n && e[j].index - e[j - 1].index <= (uint64_t)max_gap + 1 &&
				e[j].index - first < RUN_MAX;
		     j++)
			;
		got = pread(fd, buf, (size_t)(e[j - 1].index - first + 1) * 8, (off_t)(first * 8));
		stats[STAT_SYSCALLS]++;
		nr_got = got > 0 ? got / 8 : 0;
		for (k = i; k < j; k++) {
			uint64_t at = e[k].index - first;

			vals[e[k].slot] = (int64_t)at < nr_got ? buf[at] : 0;
		}
	}
	free(e);
	return 0;
}

/* Write vals[i] to the entries words[i] (sorted, distinct), one pwrite per run of adjacent
 * entries. */
static void batch_write(int fd, int64_t k, const uint64_t *words, const uint64_t *vals,
			int64_t *stats)
{
	int64_t i, j;

	for (i = 0; i < k; i = j) {
		for (j = i + 1; j < k && words[j] == words[j - 1] + 1 && j - i < RUN_MAX; j++)
			;
		/* a failed write (past the end of memory): nothing to mark there */
		(void)!pwrite(fd, &vals[i], (size_t)(j - i) * 8, (off_t)(words[i] * 8));
		stats[STAT_SYSCALLS]++;
	}
}

/* Read the entries words[i] (sorted, distinct) into vals, one pread per run of adjacent
 * entries; a short read (the bitmap's partial last chunk) leaves 0 ("no information"). */
static void batch_read_words(int fd, int64_t k, const uint64_t *words, uint64_t *vals,
			     int64_t *stats)
{
	int64_t i, j, m;

	for (i = 0; i < k; i = j) {
		ssize_t got;

		for (j = i + 1; j < k && words[j] == words[j - 1] + 1 && j - i < RUN_MAX; j++)
			;
		got = pread(fd, &vals[i], (size_t)(j - i) * 8, (off_t)(words[i] * 8));
		stats[STAT_SYSCALLS]++;
		for (m = got > 0 ? got / 8 : 0; m < j - i; m++)
			vals[i + m] = 0;
	}
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
			words[m++] = PFN_BITS(pfns[i]) >> 6;
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

/* Whether addr lies in one of the sorted, disjoint [huge[2j], huge[2j+1]) (nr_huge < 0: in
 * all of them: huge pages may be anywhere). */
static int may_be_huge(const int64_t *huge, int64_t nr_huge, int64_t addr)
{
	int64_t lo = 0, hi = nr_huge - 1;

	if (nr_huge < 0)
		return 1;
	while (lo <= hi) {
		int64_t mid = lo + (hi - lo) / 2;

		if (addr < huge[2 * mid])
			hi = mid - 1;
		else if (addr >= huge[2 * mid + 1])
			lo = mid + 1;
		else
			return 1;
	}
	return 0;
}

/* THP tails to their head: for k < nr, pfns[slot[k]] is the tail frame -2 - pfns[slot[k]];
 * set it to its head (-1 if none is found or the head is off the LRU). Its head is the first
 * aligned candidate that is a head page; all candidates of all tails in one batch (the head's
 * flags come with it). */
static int tails_to_heads(int kpf_fd, int64_t nr, const int64_t *slot, int64_t *pfns,
			  int64_t *stats)
{
	uint64_t *cand = malloc((size_t)(nr > 0 ? nr : 1) * MAX_FOLIO_ORDER * sizeof(*cand));
	uint64_t *cflags = malloc((size_t)(nr > 0 ? nr : 1) * MAX_FOLIO_ORDER * sizeof(*cflags));
	int64_t k, m = 0;
	int ret = -1;

	if (!cand || !cflags || nr <= 0)
		goto out;
	for (k = 0; k < nr; k++) {
		uint64_t pfn = (uint64_t)(-2 - pfns[slot[k]]);
		int j;

		for (j = 0; j < MAX_FOLIO_ORDER; j++)
			cand[m++] = pfn & ~((2ULL << j) - 1);
	}
	/* candidates of one tail lie within 512 frames: read them (and the frames between)
	 * in one or two calls */
	if (batch_read(kpf_fd, m, cand, cflags, 64, stats))
		goto out;
	for (k = 0; k < nr; k++) {
		int j;

		pfns[slot[k]] = -1; /* no head found: a tail page, not on the LRU itself */
		for (j = 0; j < MAX_FOLIO_ORDER; j++) {
			uint64_t f = cflags[k * MAX_FOLIO_ORDER + j];

			if (f >> KPF_COMPOUND_HEAD & 1) {
				pfns[slot[k]] = (f >> KPF_LRU & 1)
							? (int64_t)cand[k * MAX_FOLIO_ORDER + j]
							: -1;
				break;
			}
		}
	}
	ret = 0;
out:
	free(cand);
	free(cflags);
	return ret;
}

/* addrs: virtual addresses (pagemap_fd >= 0) or physical addresses (pagemap_fd < 0).
 * pfns[i]: the PFN whose idle bit tracks addrs[i]'s page, or -1 if page_idle cannot track it
 * (not present, PFN hidden, off the LRU lists); with PFN_UNVERIFIED where addrs[i] is outside
 * the huge[] ranges (see may_be_huge): kpageflags are read only inside them. Sets the idle
 * bits of those PFNs, one write per run of adjacent 64-page bitmap words; returns the number
 * of words marked, -1 if out of memory. stats: the caller's counters (STAT_*). */
int64_t pydamon_prepare(int pagemap_fd, int kpf_fd, int bitmap_fd, const int64_t *addrs, int64_t n,
			const int64_t *huge, int64_t nr_huge, int64_t *pfns, int64_t *stats)
{
	uint64_t *index = malloc((size_t)(n > 0 ? n : 1) * sizeof(*index));
	uint64_t *vals = malloc((size_t)(n > 0 ? n : 1) * sizeof(*vals));
	int64_t *slot = malloc((size_t)(n > 0 ? n : 1) * sizeof(*slot));
	int64_t i, m = 0, k, nr_tails, marked = -1;

	if (!index || !vals || !slot || n <= 0) {
		marked = index && vals && slot ? 0 : -1;
		goto out;
	}
	/* (a) pagemap -> PFN */
	if (pagemap_fd >= 0) {
		for (i = 0; i < n; i++)
			index[i] = (uint64_t)addrs[i] >> 12;
		if (batch_read(pagemap_fd, n, index, vals, 8, stats))
			goto out;
		for (i = 0; i < n; i++)
			pfns[i] = (vals[i] & PM_PRESENT) ? (int64_t)(vals[i] & PM_PFN_MASK) : -1;
	} else {
		for (i = 0; i < n; i++)
			pfns[i] = addrs[i] >> 12;
	}
	/* (b) kpageflags where a huge page may be: THP tails to their head, off-LRU pages
	 * untrackable; elsewhere checked at check time, and only if the bit reads "accessed" */
	for (i = 0; i < n; i++) {
		if (pfns[i] <= 0) {
			pfns[i] = -1;
		} else if (may_be_huge(huge, nr_huge, addrs[i])) {
			index[m] = (uint64_t)pfns[i];
			slot[m++] = i;
		} else {
			pfns[i] |= PFN_UNVERIFIED;
		}
	}
	if (batch_read(kpf_fd, m, index, vals, 0, stats))
		goto out;
	nr_tails = 0;
	for (k = 0; k < m; k++) {
		if (vals[k] >> KPF_COMPOUND_TAIL & 1) {
			slot[nr_tails++] = slot[k]; /* k >= nr_tails: slot[k] is read before reuse */
			pfns[slot[nr_tails - 1]] = -2 - pfns[slot[nr_tails - 1]];
		} else {
			pfns[slot[k]] = (vals[k] >> KPF_LRU & 1) ? pfns[slot[k]] : -1;
		}
	}
	if (nr_tails && tails_to_heads(kpf_fd, nr_tails, slot, pfns, stats))
		for (k = 0; k < nr_tails; k++)
			pfns[slot[k]] = -1;
	/* (c) one idle-bitmap write per run of adjacent distinct words */
	k = distinct_words(pfns, n, index);
	memset(vals, 0, (size_t)k * sizeof(*vals));
	for (i = 0; i < n; i++)
		if (pfns[i] >= 0)
			vals[find_word(index, k, PFN_BITS(pfns[i]) >> 6)] |= 1ULL
									     << (pfns[i] & 63);
	batch_write(bitmap_fd, k, index, vals, stats);
	marked = k;
out:
	free(index);
	free(vals);
	free(slot);
	return marked;
}

/* accessed[i] = 1 if pfns[i]'s page is no longer idle; untrackable (-1) pages: 0. One bitmap
 * read per run of adjacent 64-page words. An unverified frame whose bit reads "not idle" is
 * accessed only if kpageflags say page_idle tracks it (on the LRU, not a THP tail); a tail
 * there is marked PFN_TAIL_SEEN in pfns and counted in stats[STAT_TAILS_SEEN].
 * Returns 0, -1 if out of memory. */
int pydamon_check(int bitmap_fd, int kpf_fd, int64_t *pfns, int64_t n, uint8_t *accessed,
		  int64_t *stats)
{
	uint64_t *words = malloc((size_t)(n > 0 ? n : 1) * sizeof(*words));
	uint64_t *vals = malloc((size_t)(n > 0 ? n : 1) * sizeof(*vals));
	int64_t *slot = malloc((size_t)(n > 0 ? n : 1) * sizeof(*slot));
	int64_t i, k, m = 0;
	int ret = -1;

	if (!words || !vals || !slot)
		goto out;
	k = distinct_words(pfns, n, words);
	batch_read_words(bitmap_fd, k, words, vals, stats);
	for (i = 0; i < n; i++) {
		uint64_t word;

		if (pfns[i] < 0) {
			accessed[i] = 0;
			continue;
		}
		word = vals[find_word(words, k, PFN_BITS(pfns[i]) >> 6)];
		accessed[i] = !(word >> (pfns[i] & 63) & 1);
		if (accessed[i] && pfns[i] & PFN_UNVERIFIED)
			slot[m++] = i;
	}
	/* (words and vals are free again: reused for the flags of the unverified frames) */
	for (k = 0; k < m; k++)
		words[k] = PFN_BITS(pfns[slot[k]]);
	if (batch_read(kpf_fd, m, words, vals, 0, stats))
		goto out;
	for (k = 0; k < m; k++) {
		if (vals[k] >> KPF_COMPOUND_TAIL & 1) {
			accessed[slot[k]] = 0;
			pfns[slot[k]] = PFN_TAIL_SEEN;
			stats[STAT_TAILS_SEEN]++;
		} else if (!(vals[k] >> KPF_LRU & 1)) {
			accessed[slot[k]] = 0;
		}
	}
	ret = 0;
out:
	free(words);
	free(vals);
	free(slot);
	return ret;
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
int64_t pydamon_pick_prepare(int pagemap_fd, int kpf_fd, int bitmap_fd,
			     const int64_t *start, const int64_t *end, int64_t n,
			     uint64_t *rng_state, const int64_t *huge, int64_t nr_huge,
			     int64_t *sampling_addr, int64_t *pfns, int64_t *stats)
{
	int64_t i;

	for (i = 0; i < n; i++) {
		uint64_t size = (uint64_t)(end[i] - start[i]);

		sampling_addr[i] = start[i] +
				   (int64_t)(((unsigned __int128)next_rand(rng_state) * size) >> 64);
	}
	stats[STAT_REGION_SAMPLES] += n;
	return pydamon_prepare(pagemap_fd, kpf_fd, bitmap_fd, sampling_addr, n, huge, nr_huge,
			       pfns, stats);
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
int pydamon_check_update(int bitmap_fd, int kpf_fd, int64_t *pfns, int64_t n,
			 uint8_t *accessed, int64_t *nr_accesses, int64_t *nr_accesses_bp,
			 const int64_t *last_nr_accesses, int64_t len_window,
			 int64_t *max_nr_accesses, int64_t *stats)
{
	int ret = pydamon_check(bitmap_fd, kpf_fd, pfns, n, accessed, stats);

	if (ret == -1)
		return ret;
	*max_nr_accesses = pydamon_update_rate(n, accessed, nr_accesses, nr_accesses_bp,
					       last_nr_accesses, len_window);
	return ret;
}

/* The entry point of an extension module, so that setuptools builds and installs this file as
 * pydamon.ops._fastpath. It is never imported (ctypes loads it; the import would fail with
 * SystemError: NULL without an exception), only found by its module name. */
void *PyInit__fastpath(void);

void *PyInit__fastpath(void)
{
	return NULL;
}
