/* mdb_dicom.cpp: the DICOM data dictionary, taken from GDCM.
 *
 * GDCM's public dictionary (gdcm::Global -> Dicts -> PublicDict) is walked
 * once, at first use, into flat C tables: entries sorted by tag, a hash
 * index over them, and an index sorted by keyword. After that, tag lookups
 * are a hash probe and keyword lookups a binary search over plain arrays
 * that any thread may read; no C++ object is touched on the hot path. Repeating groups (50xx curves, 60xx overlays,
 * 7Fxx) are folded to their xx=00 entry, as the standard writes them.
 * Private VRs come from GDCM's private dictionary (per private creator).
 *
 * This is the only C++ in metadb: every entry point is noexcept in effect
 * (exceptions are caught and turned into "not found"). */
#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

/* GDCM's headers trip clang's -Wextra (an implicit copy constructor next to
 * a user-provided assignment); they are not ours to fix. */
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-copy-with-user-provided-copy"
#endif
#include <gdcmDict.h>
#include <gdcmDictEntry.h>
#include <gdcmDicts.h>
#include <gdcmGlobal.h>
#include <gdcmPrivateTag.h>
#include <gdcmTrace.h>
#include <gdcmVR.h>
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

#include "mdb_dicom.h"

namespace
{

struct Dictionary {
    std::vector<mdb_dicom_dict_entry_t> by_tag; /* sorted by tag */
    std::vector<int32_t> hash;                  /* open addressing over by_tag: index + 1, 0 = empty */
    size_t hash_mask = 0;
    std::vector<uint32_t> by_keyword;  /* indices into by_tag, sorted by keyword */
    std::vector<std::string> keywords; /* storage behind entry.keyword */
};

Dictionary *g_dict = nullptr;

size_t tag_hash(uint32_t tag)
{
    uint32_t h = tag * 0x9E3779B1u;
    return (size_t)(h ^ (h >> 15));
}
std::once_flag g_once;

/* "US or SS or OW" -> vr "US", alt "SS"; "DS" -> "DS", "". */
void split_vr(const char *s, char vr[3], char alt[3])
{
    vr[0] = vr[1] = vr[2] = alt[0] = alt[1] = alt[2] = '\0';
    if (!s || std::strlen(s) < 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z')
        return;
    vr[0] = s[0];
    vr[1] = s[1];
    const char *o = std::strstr(s, " or ");
    if (o && std::strlen(o) >= 6) {
        alt[0] = o[4];
        alt[1] = o[5];
    }
}

void build()
{
    auto *d = new Dictionary();
    try {
        gdcm::Trace::SetWarning(false);
        gdcm::Trace::SetDebug(false);
        gdcm::Trace::SetError(false);
        const gdcm::Dict &pd = gdcm::Global::GetInstance().GetDicts().GetPublicDict();
        size_t n = 0;
        for (auto it = pd.Begin(); it != pd.End(); ++it)
            n++;
        d->by_tag.reserve(n);
        d->keywords.reserve(n);
        for (auto it = pd.Begin(); it != pd.End(); ++it) {
            const gdcm::DictEntry &e = it->second;
            uint32_t tag = MDB_TAG(it->first.GetGroup(), it->first.GetElement());
            if (MDB_TAG_GROUP(tag) == 0xFFFE)
                continue; /* item and delimiters are not attributes */
            mdb_dicom_dict_entry_t out;
            std::memset(&out, 0, sizeof out);
            out.tag = tag;
            split_vr(gdcm::VR::GetVRString(e.GetVR()), out.vr, out.vr_alt);
            out.retired = e.GetRetired();
            d->keywords.emplace_back(e.GetKeyword() ? e.GetKeyword() : "");
            out.keyword = nullptr; /* set once storage stops moving */
            d->by_tag.push_back(out);
        }
        for (size_t i = 0; i < d->by_tag.size(); i++)
            d->by_tag[i].keyword = d->keywords[i].c_str();
        std::vector<size_t> order(d->by_tag.size());
        for (size_t i = 0; i < order.size(); i++)
            order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [d](size_t a, size_t b) { return d->by_tag[a].tag < d->by_tag[b].tag; });
        std::vector<mdb_dicom_dict_entry_t> sorted;
        sorted.reserve(order.size());
        for (size_t i : order)
            sorted.push_back(d->by_tag[i]);
        d->by_tag.swap(sorted);
        for (size_t i = 0; i < d->by_tag.size(); i++)
            if (d->by_tag[i].keyword[0])
                d->by_keyword.push_back((uint32_t)i);
        size_t size = 1024;
        while (size < d->by_tag.size() * 2)
            size *= 2;
        d->hash.assign(size, 0);
        d->hash_mask = size - 1;
        for (size_t i = 0; i < d->by_tag.size(); i++) {
            size_t h = tag_hash(d->by_tag[i].tag) & d->hash_mask;
            while (d->hash[h])
                h = (h + 1) & d->hash_mask;
            d->hash[h] = (int32_t)i + 1;
        }
        std::stable_sort(d->by_keyword.begin(), d->by_keyword.end(), [d](uint32_t a, uint32_t b) {
            int c = std::strcmp(d->by_tag[a].keyword, d->by_tag[b].keyword);
            if (c != 0)
                return c < 0;
            /* same keyword twice: prefer the current (non-retired) entry */
            return !d->by_tag[a].retired && d->by_tag[b].retired;
        });
    } catch (...) {
        d->by_tag.clear();
        d->by_keyword.clear();
    }
    g_dict = d;
}

const Dictionary *dict()
{
    static std::atomic<const Dictionary *> ready{nullptr};
    const Dictionary *d = ready.load(std::memory_order_acquire);
    if (d)
        return d; /* the hot path: no call_once bookkeeping */
    try {
        std::call_once(g_once, build);
    } catch (...) {
        return nullptr;
    }
    ready.store(g_dict, std::memory_order_release);
    return g_dict;
}

const mdb_dicom_dict_entry_t *find_tag(const Dictionary *d, uint32_t tag)
{
    if (d->hash.empty())
        return nullptr;
    for (size_t h = tag_hash(tag) & d->hash_mask; d->hash[h]; h = (h + 1) & d->hash_mask)
        if (d->by_tag[(size_t)d->hash[h] - 1].tag == tag)
            return &d->by_tag[(size_t)d->hash[h] - 1];
    return nullptr;
}

} // namespace

extern "C" const mdb_dicom_dict_entry_t *mdb_dicom_dict_by_tag(uint32_t tag)
{
    const Dictionary *d = dict();
    if (!d)
        return nullptr;
    const mdb_dicom_dict_entry_t *e = find_tag(d, tag);
    if (e)
        return e;
    uint16_t g = MDB_TAG_GROUP(tag);
    if (!(g & 1) && ((g >= 0x5000 && g <= 0x50FF) || (g >= 0x6000 && g <= 0x60FF) || (g >= 0x7F00 && g <= 0x7FFF)))
        return find_tag(d, MDB_TAG(g & 0xFF00, MDB_TAG_ELEMENT(tag)));
    return nullptr;
}

extern "C" const mdb_dicom_dict_entry_t *mdb_dicom_dict_by_keyword(const char *keyword)
{
    const Dictionary *d = dict();
    if (!d || !keyword || !keyword[0])
        return nullptr;
    auto it = std::lower_bound(d->by_keyword.begin(), d->by_keyword.end(), keyword,
                               [d](uint32_t i, const char *k) { return std::strcmp(d->by_tag[i].keyword, k) < 0; });
    if (it != d->by_keyword.end() && std::strcmp(d->by_tag[*it].keyword, keyword) == 0)
        return &d->by_tag[*it];
    return nullptr;
}

extern "C" size_t mdb_dicom_dict_size(void)
{
    const Dictionary *d = dict();
    return d ? d->by_tag.size() : 0;
}

extern "C" const char *mdb_dicom_private_vr(uint32_t tag, const char *creator)
{
    static thread_local char out[3];
    if (!creator || !creator[0] || !dict())
        return nullptr;
    try {
        const gdcm::Dicts &dicts = gdcm::Global::GetInstance().GetDicts();
        gdcm::PrivateTag pt(MDB_TAG_GROUP(tag), (uint16_t)(MDB_TAG_ELEMENT(tag) & 0x00FF), creator);
        const gdcm::DictEntry &e = dicts.GetDictEntry(pt);
        char vr[3], alt[3];
        split_vr(gdcm::VR::GetVRString(e.GetVR()), vr, alt);
        if (!vr[0] || (vr[0] == 'U' && vr[1] == 'N'))
            return nullptr;
        std::memcpy(out, vr, 3);
        return out;
    } catch (...) {
        return nullptr;
    }
}
