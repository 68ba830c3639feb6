/* pydamon's per-sample access-check loop in C (optional; pure-Python fallback in _native.py).
 *
 * The same steps as the Python path of pydamon.ops.vaddr/paddr: pagemap -> PFN, kpageflags ->
 * THP head / LRU check, idle bitmap write at prepare time; idle bitmap read at check time; one
 * pread/pwrite per 8-byte entry.
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

/* For i < n: read (write == 0) or write the 8-byte entry index[i] of fd from/to vals[i].
 * A read that fails or comes up short leaves 0 in vals[i]. Returns the number of entries
 * transferred in full. */
static int64_t batch_io(int fd, int write, int64_t n, const uint64_t *index, uint64_t *vals)
{
	int64_t i, ok = 0;

	for (i = 0; i < n; i++) {
		ssize_t got = write ? pwrite(fd, &vals[i], 8, (off_t)(index[i] * 8))
				    : pread(fd, &vals[i], 8, (off_t)(index[i] * 8));

		if (got == 8)
			ok++;
		else if (!write)
			vals[i] = 0;
	}
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
 * per 64-page bitmap word; returns the number of words written, -1 if out of memory. */
int64_t pydamon_prepare(int pagemap_fd, int kpf_fd, int bitmap_fd, const int64_t *addrs, int64_t n,
			int64_t *pfns)
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
		batch_io(pagemap_fd, 0, n, index, vals);
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
	batch_io(kpf_fd, 0, m, index, vals);
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
		batch_io(kpf_fd, 0, nr_tails * MAX_FOLIO_ORDER, cand, cflags);
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
	marked = batch_io(bitmap_fd, 1, k, index, vals);
out:
	free(index);
	free(vals);
	free(slot);
	return marked;
}

/* accessed[i] = 1 if pfns[i]'s page is no longer idle; untrackable (-1) pages: 0.
 * One bitmap read per distinct 64-page word. Returns 0, -1 if out of memory. */
int pydamon_check(int bitmap_fd, const int64_t *pfns, int64_t n, uint8_t *accessed)
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
	batch_io(bitmap_fd, 0, k, words, vals);
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
	return 0;
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
			     uint64_t *rng_state, int64_t *sampling_addr, int64_t *pfns)
{
	int64_t i;

	for (i = 0; i < n; i++) {
		uint64_t size = (uint64_t)(end[i] - start[i]);

		sampling_addr[i] = start[i] +
				   (int64_t)(((unsigned __int128)next_rand(rng_state) * size) >> 64);
	}
	return pydamon_prepare(pagemap_fd, kpf_fd, bitmap_fd, sampling_addr, n, pfns);
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
int pydamon_check_update(int bitmap_fd, const int64_t *pfns, int64_t n,
			 uint8_t *accessed, int64_t *nr_accesses, int64_t *nr_accesses_bp,
			 const int64_t *last_nr_accesses, int64_t len_window,
			 int64_t *max_nr_accesses)
{
	int ret = pydamon_check(bitmap_fd, pfns, n, accessed);

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
