/* pydamon's per-sample access-check loop in C (optional; pure-Python fallback in _native.py).
 *
 * The same steps as the Python path of pydamon.ops.vaddr/paddr, without the interpreter's
 * per-call overhead: pagemap -> PFN, kpageflags -> THP head / LRU check, idle bitmap write at
 * prepare time; idle bitmap read at check time. One pread/pwrite per 8-byte entry.
 */
#include <stdint.h>
#include <unistd.h>

#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)
#define KPF_LRU 5
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define MAX_FOLIO_PAGES 512

static uint64_t read_u64(int fd, uint64_t index)
{
	uint64_t v = 0;

	if (pread(fd, &v, 8, (off_t)(index * 8)) != 8)
		return 0;
	return v;
}

/* The PFN whose idle bit tracks pfn's page, or -1 if page_idle cannot track it. */
static int64_t trackable(int kpf_fd, int64_t pfn)
{
	uint64_t flags = read_u64(kpf_fd, (uint64_t)pfn);

	if (flags >> KPF_COMPOUND_TAIL & 1) {
		uint64_t window[MAX_FOLIO_PAGES];
		int64_t lo = pfn & ~(int64_t)(MAX_FOLIO_PAGES - 1);
		ssize_t n = pread(kpf_fd, window, (size_t)(pfn - lo + 1) * 8, (off_t)(lo * 8));
		int64_t i;

		for (i = n / 8 - 1; i >= 0; i--) {
			if (window[i] >> KPF_COMPOUND_HEAD & 1) {
				pfn = lo + i;
				flags = read_u64(kpf_fd, (uint64_t)pfn);
				break;
			}
		}
	}
	return (flags >> KPF_LRU & 1) ? pfn : -1;
}

/* addrs: virtual addresses (pagemap_fd >= 0) or physical addresses (pagemap_fd < 0). */
int64_t pydamon_prepare(int pagemap_fd, int kpf_fd, int bitmap_fd, const int64_t *addrs,
			int64_t n, int64_t *pfns)
{
	int64_t i, marked = 0;

	for (i = 0; i < n; i++) {
		int64_t pfn;

		if (pagemap_fd >= 0) {
			uint64_t e = read_u64(pagemap_fd, (uint64_t)addrs[i] >> 12);

			pfn = (e & PM_PRESENT) ? (int64_t)(e & PM_PFN_MASK) : -1;
		} else {
			pfn = addrs[i] >> 12;
		}
		pfns[i] = pfn > 0 ? trackable(kpf_fd, pfn) : -1;
	}
	for (i = 0; i < n; i++) {
		uint64_t mask;

		if (pfns[i] < 0)
			continue;
		mask = 1ULL << (pfns[i] & 63);
		if (pwrite(bitmap_fd, &mask, 8, (off_t)((pfns[i] >> 6) * 8)) == 8)
			marked++;
	}
	return marked;
}

/* accessed[i] = 1 if pfns[i]'s page is no longer idle; untrackable (-1) pages: 0. */
void pydamon_check(int bitmap_fd, const int64_t *pfns, int64_t n, uint8_t *accessed)
{
	int64_t i, last_word = -1;
	uint64_t word = 0;

	for (i = 0; i < n; i++) {
		if (pfns[i] < 0) {
			accessed[i] = 0;
			continue;
		}
		if ((pfns[i] >> 6) != last_word) {
			last_word = pfns[i] >> 6;
			word = read_u64(bitmap_fd, (uint64_t)last_word);
		}
		accessed[i] = !(word >> (pfns[i] & 63) & 1);
	}
}
