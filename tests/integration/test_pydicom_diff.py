#!/usr/bin/python3
"""Differential test: metadb's extractor against pydicom, an independent
DICOM implementation, over EVERY file shipped in pydicom's test_files and
charset_files (recursively, non-DICOM files included).

For each file, `metadb extract` runs with a feature set of '*' at every level
plus the private tags pydicom finds, and each attribute we emit must equal
pydicom's value under the typing rules of common/dicom/mdb_extract.h:
strings after charset decoding (trailing padding removed), IS -> int,
DS -> float, binary numbers, VM>1 -> lists, SQ -> lists of objects, AT ->
"GGGGEEEE", binary VRs absent. Values pydicom cannot convert (IS "1.5",
DS "abc", NaN) must be our stored string with the key listed in _invalid.
Every public, non-binary top-level attribute pydicom reads must be present
in our output too.

metadb runs with --no-uid-check so files without the three UIDs are
compared too (a worker refuses them with "missing_uid"; test_extract.c
checks that). Files pydicom cannot read (even with force=True) must be
refused by metadb with a reason code (never a crash). Files pydicom reads
completely but we refuse are mismatches, except DICOMDIRs (refused by design
with reason "dicomdir") and files we call "truncated" that dcmtk's dcmdump,
a third implementation, also finds cut short (pydicom silently keeps what it
got of a sequence whose declared length runs past the end of the file).

Truncated pixel data: every file pydicom reads normally whose top-level
Pixel Data is in the file (not deflated) is also copied cut short inside its
Pixel Data (native: half the value, and inside the element's own length
field; encapsulated: in the middle of the last fragment). Each copy must be
extracted, not refused (its header is whole): its values are compared with
pydicom's reading of the copy like any file, and its "integrity" object must
equal what this test computes from the original (declared length vs bytes
left, fragment item headers walked here) and, for native pixel data, what
pydicom's raw Pixel Data element of the copy says (declared length, bytes
read). For the original files, an "integrity" object must agree with
pydicom's raw element too (flagged iff pydicom reads fewer bytes than
declared).

Prints every file with the number of values compared, then the totals, and
exits 1 on any mismatch.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import warnings

import pydicom
from pydicom.datadict import keyword_dict
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

warnings.simplefilter("ignore")

DATA = os.path.join(os.path.dirname(pydicom.__file__), "data")
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW", "OW or OB"}
STRING_VRS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "SH", "LO", "PN", "UC", "LT", "ST", "UT", "UR"}
NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}
# keywords that GDCM spells differently from pydicom
ALIASES = {"FrameNumbersOfInterestFOI": 0x00286020, "ViewOrientationModifier": 0x006862F0,
           "StructuredContraintObservationSequence": 0x0082000C,
           "ThreatDetectionAlgorithmandVersion": 0x40101029}
META = {"promoted", "_invalid", "_replaced"}


class Invalid:
    """pydicom could not convert this value: we must keep the string and flag it."""

    def __init__(self, raw):
        self.raw = raw


def find_files():
    out = []
    for sub in ("test_files", "charset_files"):
        for root, dirs, files in os.walk(os.path.join(DATA, sub)):
            dirs.sort()
            for f in sorted(files):
                out.append(os.path.join(root, f))
    return out


def tag_of_key(key):
    if len(key) == 8 and all(c in "0123456789ABCDEF" for c in key):
        return int(key, 16)
    if key in ALIASES:
        return ALIASES[key]
    return keyword_dict.get(key)


def norm_str(s):
    return s.replace("\x00", "\ufffd")


def raw_string(elem_raw):
    """The stored bytes of a raw element as our extractor keeps an invalid number."""
    b = elem_raw.value or b""
    return b.decode("latin-1").strip(" \t\r\n\x00\x0b\x0c")


def expect(elem, raw=None):
    """pydicom's element value typed by our rules. Returns (present, value)."""
    vr = elem.VR
    if vr in BINARY_VRS:
        return False, None
    if vr == "SQ":
        return True, [expect_dataset(item) for item in elem.value]
    v = elem.value
    if vr in STRING_VRS:
        if v is None:
            return True, ""
        if isinstance(v, (list, MultiValue)):
            vals = [norm_str(str(x)) if not isinstance(x, bytes) else x.decode("latin-1") for x in v]
            return True, vals if len(vals) != 1 else vals[0]
        if isinstance(v, bytes):
            return True, norm_str(v.decode("latin-1"))
        return True, norm_str(str(v))
    if vr in ("IS", "DS"):
        conv = int if vr == "IS" else float
        def one(x):
            if x is None or x == "":
                return None
            f = conv(x)
            if vr == "DS" and not math.isfinite(f):
                return Invalid(None)
            return f
        if isinstance(v, (list, MultiValue)):
            return True, [one(x) for x in v]
        return True, one(v)
    if vr in NUMBER_VRS:
        if v is None or v == b"" or v == "":
            return True, None
        if isinstance(v, (list, MultiValue)):
            vals = [float(x) if vr in ("FL", "FD") else int(x) for x in v]
            if vr in ("FL", "FD") and any(not math.isfinite(x) for x in vals):
                return True, Invalid(None)
            return True, vals if len(vals) != 1 else vals[0]
        if vr in ("FL", "FD"):
            f = float(v)
            return True, f if math.isfinite(f) else Invalid(None)
        return True, int(v)
    if vr == "AT":
        if v is None or v == "":
            return True, None
        if isinstance(v, (list, MultiValue)):
            vals = ["%08X" % int(x) for x in v]
            return True, vals if len(vals) != 1 else vals[0]
        return True, "%08X" % int(v)
    return False, None


def key_for(tag):
    from pydicom.datadict import keyword_for_tag
    return keyword_for_tag(tag) or "%08X" % tag


def expect_dataset(ds):
    out = {}
    for tag in ds.keys():
        if tag.element == 0 or tag.group == 2:
            continue
        try:
            elem = ds[tag]
        except Exception:
            out[int(tag)] = Invalid(ds.get_item(tag))
            continue
        try:
            present, value = expect(elem)
        except Exception:
            present, value = True, Invalid(ds.get_item(tag))
        if present:
            out[int(tag)] = value
    return out


class Comparer:
    def __init__(self):
        self.values = 0
        self.mismatches = []

    def fail(self, f, where, msg):
        self.mismatches.append("%s: %s: %s" % (os.path.relpath(f, DATA), where, msg))

    def same(self, f, where, ours, exp, invalid_keys, key_path):
        if isinstance(exp, Invalid):
            if key_path not in invalid_keys:
                self.fail(f, where, "pydicom cannot convert the value; expected our key in _invalid, got %r"
                          % (ours,))
                return
            if not isinstance(ours, (str, list)):
                self.fail(f, where, "invalid value should be kept as a string, got %r" % (ours,))
            return
        if isinstance(exp, dict):
            if not isinstance(ours, dict):
                self.fail(f, where, "expected an object, got %r" % (ours,))
                return
            self.compare_dataset(f, where, ours, exp, invalid_keys, key_path + ".")
            return
        if isinstance(exp, list) and exp and isinstance(exp[0], dict) or (isinstance(exp, list) and
                                                                           isinstance(ours, list) and
                                                                           ours and isinstance(ours[0], dict)):
            if not isinstance(ours, list) or len(ours) != len(exp):
                self.fail(f, where, "sequence: expected %d items, got %r" % (len(exp), ours))
                return
            for i, (o, e) in enumerate(zip(ours, exp)):
                self.same(f, "%s[%d]" % (where, i), o, e, invalid_keys, "%s.%d" % (key_path, i))
            return
        if isinstance(exp, list) and any(isinstance(x, Invalid) for x in exp):
            if key_path not in invalid_keys:
                self.fail(f, where, "a value pydicom cannot convert; key not in _invalid (ours %r)" % (ours,))
            return
        self.values += 1
        if type(exp) is float:
            if type(ours) is not float or ours != exp:
                self.fail(f, where, "ours %r != pydicom %r (a real)" % (ours, exp))
            return
        if isinstance(exp, list) and isinstance(ours, list) and len(exp) == len(ours):
            for o, e in zip(ours, exp):
                if type(e) is float:
                    if type(o) is not float or o != e:
                        self.fail(f, where, "ours %r != pydicom %r" % (ours, exp))
                        return
                elif o != e or type(o) is not type(e):
                    self.fail(f, where, "ours %r != pydicom %r" % (ours, exp))
                    return
            return
        if ours != exp or (type(ours) is not type(exp) and not (exp is None and ours is None)):
            self.fail(f, where, "ours %r != pydicom %r" % (ours, exp))

    def compare_dataset(self, f, where, ours, exp, invalid_keys, prefix):
        seen = set()
        for key, val in ours.items():
            if key in META:
                continue
            tag = tag_of_key(key)
            if tag is None:
                self.fail(f, where + key, "key is neither a pydicom keyword nor a hex tag")
                continue
            seen.add(tag)
            if tag not in exp:
                self.fail(f, where + key, "we emit %r, pydicom has no (non-binary) value" % (val,))
                continue
            self.same(f, where + key, val, exp[tag], invalid_keys, prefix + key)
        for tag, val in exp.items():
            if tag in seen or (tag >> 16) & 1 and prefix == "":
                continue  # private tags only as far as listed
            self.fail(f, where + key_for(tag), "pydicom has %r, we emit nothing" % (val,))


def pydicom_read(path):
    """(dataset or None, how): how is 'normal', 'force' or the error."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True), "normal"
    except InvalidDicomError:
        pass
    except Exception as e:
        return None, "%s: %s" % (type(e).__name__, e)
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True), "force"
    except Exception as e:
        return None, "%s: %s" % (type(e).__name__, e)


def complete(ds, how):
    """Does the read hold a usable data set (normal read, or a forced read of
    something with the UIDs), fully convertible?"""
    try:
        if how == "force" and not str(getattr(ds, "SOPInstanceUID", "") or ""):
            return False, "forced read finds no instance"
        for elem in ds.iterall():
            _ = elem.value
        return True, ""
    except Exception as e:
        return False, "%s: %s" % (type(e).__name__, e)


def dcmtk_truncated(path):
    """dcmtk's verdict: does the file end before its declared lengths?"""
    try:
        p = subprocess.run(["dcmdump", "+E", path], capture_output=True, timeout=60)
    except FileNotFoundError:
        return False
    text = p.stderr.decode("latin-1")
    return p.returncode != 0 and ("premature end of stream" in text or "than remaining bytes" in text)


PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"


def raw_pixels(path):
    """pydicom's raw top-level Pixel Data element of a file (RawDataElement,
    value not converted), or None."""
    try:
        ds = pydicom.dcmread(path, force=True)
        raw = ds._dict.get(PIXEL_DATA)
        return raw if raw is not None and hasattr(raw, "value_tell") else None
    except Exception:
        return None


def pydicom_integrity(raw):
    """For native pixel data: the integrity object pydicom's raw element
    implies (None when the value is whole), or "unknown"."""
    if raw is None or raw.length == UNDEFINED or raw.value is None:
        return "unknown"
    got = len(raw.value)
    if got >= raw.length:
        return None
    return {"pixel_data_truncated": True, "pixel_data_bytes_expected": raw.length, "pixel_data_bytes_present": got}


def fragment_ends(data, vpos, little):
    """End offsets (relative to vpos) of the items of an encapsulated value."""
    fmt = "<HHI" if little else ">HHI"
    ends, o = [], vpos
    while o + 8 <= len(data):
        g, e, n = struct.unpack(fmt, data[o:o + 8])
        if (g, e) == (0xFFFE, 0xE0DD):
            ends.append(o + 8 - vpos)
            break
        if (g, e) != (0xFFFE, 0xE000) or n == UNDEFINED:
            return None
        o += 8 + n
        ends.append(o - vpos)
    return ends


def make_pixel_cuts(files, outdir):
    """Copies of files cut short inside their Pixel Data:
    {copy path: (original, expected integrity object, reference)}. pydicom
    cannot read a file that ends inside the Pixel Data element's own header
    (not even with stop_before_pixels), so such a copy's values are compared
    with pydicom's reading of the reference: the same file cut right before
    the Pixel Data tag (otherwise the reference is the copy itself)."""
    cuts = {}
    for f in files:
        if os.path.getsize(f) > 8 << 20:
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        except Exception:
            continue
        raw = raw_pixels(f)
        if ts == DEFLATED or raw is None or raw.value_tell is None:
            continue
        data = open(f, "rb").read()
        vt = raw.value_tell
        if vt > len(data) or data[vt - 8:vt - 6] not in (b"\xe0\x7f", b"\x7f\xe0") and \
                data[vt - 12:vt - 10] not in (b"\xe0\x7f", b"\x7f\xe0"):
            continue  # not where a top-level element header would be
        base = os.path.join(outdir, "cut_" + os.path.relpath(f, DATA).replace(os.sep, "_"))
        tag_at = vt - 12 if data[vt - 12:vt - 10] in (b"\xe0\x7f", b"\x7f\xe0") else vt - 8
        ref = base + ".tag"
        with open(ref, "wb") as fh:
            fh.write(data[:tag_at])
        wanted = []
        if raw.length != UNDEFINED:
            if vt + raw.length > len(data) or raw.length < 2:
                continue  # already short, or nothing to cut
            half = raw.length // 2
            wanted.append((base + ".half", vt + half, {"pixel_data_truncated": True,
                                                      "pixel_data_bytes_expected": raw.length,
                                                      "pixel_data_bytes_present": half}, None))
            wanted.append((base + ".len", vt - 2, {"pixel_data_truncated": True, "pixel_data_bytes_present": 0},
                           ref))
        else:
            ends = fragment_ends(data, vt, raw.is_little_endian)
            # offset table item, at least one fragment, the delimiter
            if not ends or len(ends) < 3 or ends[-2] - ends[-3] < 16 or vt + ends[-1] > len(data):
                continue
            start, last_frag_end = ends[-3], ends[-2]  # the last fragment's item
            cut = start + 8 + (last_frag_end - start - 8) // 2
            wanted.append((base + ".frag", vt + cut, {"pixel_data_truncated": True,
                                                     "pixel_data_bytes_expected": last_frag_end,
                                                     "pixel_data_bytes_present": cut,
                                                     "pixel_data_encapsulated": True}, None))
        for path, at, integ, reference in wanted:
            with open(path, "wb") as fh:
                fh.write(data[:at])
            cuts[path] = (f, integ, reference or path)
    return cuts


def main():
    build = os.environ.get("MDB_BUILD_DIR")
    if not build:
        here = os.path.dirname(os.path.abspath(__file__))
        build = os.path.join(here, "..", "..", "build")
    metadb = os.path.join(build, "cli", "metadb")
    if not os.access(metadb, os.X_OK):
        print("FAIL: %s not built" % metadb)
        return 1
    originals = find_files()
    cutdir = tempfile.TemporaryDirectory(prefix="mdb_diff_cuts_")
    cuts = make_pixel_cuts(originals, cutdir.name)
    files = originals + sorted(cuts)
    pyds = {f: pydicom_read(cuts[f][2] if f in cuts else f) for f in files}
    private = set()
    for f, (ds, how) in pyds.items():
        if ds is not None:
            try:
                for elem in ds:
                    if elem.tag.is_private and elem.tag.element >= 0x10:
                        private.add(int(elem.tag))
            except Exception:
                pass
    with tempfile.TemporaryDirectory(prefix="mdb_diff_") as tmp:
        inst = "*\n" + "".join("%08X\n" % t for t in sorted(private))
        for name, text in (("StudyFeatures.txt", "*\n"), ("SeriesFeatures.txt", "*\n"),
                           ("InstanceFeatures.txt", inst)):
            with open(os.path.join(tmp, name), "w") as fh:
                fh.write(text)
        env = dict(os.environ)
        proc = subprocess.run([metadb, "--features.dir=" + tmp, "--log.level=error", "extract", "--quiet", "--no-uid-check"] + files,
                              capture_output=True, env=env, timeout=600)
    if proc.returncode not in (0, 1):
        print("FAIL: metadb extract exited with %d (crash?)\nstderr: %s" % (proc.returncode,
                                                                           proc.stderr.decode()[-2000:]))
        return 1
    lines = proc.stdout.decode("utf-8").splitlines()
    if len(lines) != len(files):
        print("FAIL: %d files in, %d results out\nstderr: %s" % (len(files), len(lines),
                                                                 proc.stderr.decode()[-2000:]))
        return 1
    cmp = Comparer()
    compared_files = refused_ok = flagged_ok = 0
    results = {}
    for f, line in zip(files, lines):
        results[f] = json.loads(line)
    for f, line in zip(files, lines):
        rel = "cut/" + os.path.basename(f) if f in cuts else os.path.relpath(f, DATA)
        ours = results[f]
        ds, how = pyds[f]
        if f in cuts:
            orig, want, _ref = cuts[f]
            if "error" in results[orig]:
                continue  # the original is refused (judged above); its copies say nothing new
            if "error" in ours:
                cmp.fail(f, "file", "header whole, Pixel Data cut: must be extracted, refused: %s: %s" %
                         (ours["error"], ours.get("message")))
                print("  %-55s MISMATCH: refused (%s), header is whole" % (rel, ours["error"]))
                continue
            if ours.get("integrity") != want:
                cmp.fail(f, "integrity", "ours %r != expected %r" % (ours.get("integrity"), want))
            elif "pixel_data_bytes_expected" in want and not want.get("pixel_data_encapsulated"):
                py = pydicom_integrity(raw_pixels(f))
                if py != "unknown" and py != want:
                    cmp.fail(f, "integrity", "ours %r != pydicom's raw Pixel Data element %r" % (want, py))
                else:
                    flagged_ok += 1
            else:
                flagged_ok += 1
        elif "error" not in ours:
            py = pydicom_integrity(raw_pixels(f)) if ds is not None else "unknown"
            if py != "unknown" and ours.get("integrity") != py:
                cmp.fail(f, "integrity", "ours %r, pydicom's raw Pixel Data element implies %r" %
                         (ours.get("integrity"), py))
        if "error" in ours:
            usable, why = (False, how) if ds is None else complete(ds, how)
            if ours["error"] == "dicomdir":
                refused_ok += 1
                print("  %-55s refused: dicomdir (by design)" % rel)
            elif ours["error"] == "truncated" and dcmtk_truncated(f):
                refused_ok += 1
                print("  %-55s refused: truncated (dcmtk agrees; pydicom keeps a partial data set)" % rel)
            elif usable:
                cmp.fail(f, "file", "pydicom reads it (%s) but we refuse: %s: %s" % (how, ours["error"],
                                                                                    ours.get("message")))
                print("  %-55s MISMATCH: refused (%s) but pydicom reads it" % (rel, ours["error"]))
            else:
                refused_ok += 1
                print("  %-55s refused: %s (pydicom: %s)" % (rel, ours["error"], why[:70]))
            continue
        if ds is None:
            cmp.fail(f, "file", "we extract it, pydicom cannot read it: %s" % how)
            continue
        before = cmp.values
        exp = expect_dataset(ds)
        inst = ours["instance"]
        invalid = set(inst.get("_invalid", []))
        cmp.compare_dataset(f, "instance.", inst, exp, invalid, "")
        for lvl in ("study", "series"):
            for k, v in ours[lvl].items():
                if k not in META and inst.get(k, v) != v:
                    cmp.fail(f, lvl + "." + k, "differs from instance level: %r vs %r" % (v, inst.get(k)))
        compared_files += 1
        print("  %-55s %4d values compared (%s read)" % (rel, cmp.values - before, how))
    cutdir.cleanup()
    print("\n%d files (%d of them copies cut inside their Pixel Data): %d extracted and compared (%d values), "
          "%d refused with a reason, %d cut copies flagged exactly, %d mismatches" %
          (len(files), len(cuts), compared_files, cmp.values, refused_ok, flagged_ok, len(cmp.mismatches)))
    for m in cmp.mismatches:
        print("MISMATCH " + m)
    if cmp.mismatches or compared_files == 0 or flagged_ok == 0:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
