"""Shared helpers of the WADO-RS tests and bench (tests/integration/test_wado*.py,
bench/bench_wado.py): a small archive of real DICOM files and catalogue
documents pointing at them, a PNG reader and a multipart/related splitter.

The archive is built from pydicom's own test files (Debian python3-pydicom):
  - CT_small.dcm (CT, no window in the file: rendered from the pixel range),
  - MR_small.dcm (MR, WindowCenter/Width in the file), and the same pixels as
    JPEG lossless, JPEG 2000, RLE and JPEG-LS made with `gdcmconv`
    (Debian libgdcm-tools) plus implicit-VR and big-endian copies,
  - a MONOCHROME1 CR made from CT_small's pixels (pydicom ships none),
each copy with its own SOP Instance UID. The catalogue documents are shaped
like the linker's (DESIGN.md: instances keyed by SOP Instance UID with
series_id, study_id, paths, instance_number, dicom.transfer_syntax); the
retrieval side only needs those.

Not a test itself (ctest registers test_*.py only)."""
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pydicom
from pydicom.uid import generate_uid

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
UID_ROOT = "1.2.826.0.1.3680043.10.543."  # test UIDs

TS_NAMES = {
    "1.2.840.10008.1.2": "implicit",
    "1.2.840.10008.1.2.1": "explicit LE",
    "1.2.840.10008.1.2.2": "explicit BE",
    "1.2.840.10008.1.2.4.70": "JPEG lossless",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.5": "RLE",
}


def _copy_with_uids(src, dst, sop, series=None, study=None, number=None, edit=None):
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    if series:
        ds.SeriesInstanceUID = series
    if study:
        ds.StudyInstanceUID = study
    if number is not None:
        ds.InstanceNumber = number
    if edit:
        edit(ds)
    ds.save_as(dst, write_like_original=True)


def _gdcmconv(flag, src, dst):
    subprocess.run(["gdcmconv", flag, src, dst], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def build_archive(root):
    """Write the archive under root; returns a list of dicts {path, sop, series, study, number, ts, kind,
    source} (source: the uncompressed file holding the same pixels)."""
    os.makedirs(root, exist_ok=True)
    out = []
    mr_study, mr_series = UID_ROOT + "1.1", UID_ROOT + "1.2"
    ct_study, ct_series = UID_ROOT + "2.1", UID_ROOT + "2.2"
    cr_study, cr_series = UID_ROOT + "3.1", UID_ROOT + "3.2"

    def add(path, sop, series, study, number, kind, source):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.append({"path": path, "sop": sop, "series": series, "study": study, "number": number,
                    "ts": str(ds.file_meta.TransferSyntaxUID), "kind": kind, "source": source})

    mr = os.path.join(root, "mr", "mr_01.dcm")
    os.makedirs(os.path.dirname(mr), exist_ok=True)
    _copy_with_uids(os.path.join(PYDICOM_FILES, "MR_small.dcm"), mr, UID_ROOT + "1.3.1", mr_series, mr_study, 1)
    add(mr, UID_ROOT + "1.3.1", mr_series, mr_study, 1, "MR", mr)
    n = 2
    for flag, kind in (("-J", "MR JPEG lossless"), ("-K", "MR JPEG 2000"), ("-R", "MR RLE"), ("-L", "MR JPEG-LS")):
        sop = UID_ROOT + "1.3.%d" % n
        tmp = os.path.join(root, "mr", ".tmp.dcm")
        _copy_with_uids(mr, tmp, sop, number=n)
        dst = os.path.join(root, "mr", "mr_%02d.dcm" % n)
        _gdcmconv(flag, tmp, dst)
        os.unlink(tmp)
        add(dst, sop, mr_series, mr_study, n, kind, mr)
        n += 1
    for name, kind in (("MR_small_implicit.dcm", "MR implicit VR"), ("MR_small_bigendian.dcm", "MR big endian")):
        sop = UID_ROOT + "1.3.%d" % n
        dst = os.path.join(root, "mr", "mr_%02d.dcm" % n)
        _copy_with_uids(os.path.join(PYDICOM_FILES, name), dst, sop, mr_series, mr_study, n)
        add(dst, sop, mr_series, mr_study, n, kind, dst)
        n += 1

    ct = os.path.join(root, "ct", "ct_01.dcm")
    os.makedirs(os.path.dirname(ct), exist_ok=True)
    _copy_with_uids(os.path.join(PYDICOM_FILES, "CT_small.dcm"), ct, UID_ROOT + "2.3.1", ct_series, ct_study, 1)
    add(ct, UID_ROOT + "2.3.1", ct_series, ct_study, 1, "CT", ct)

    def to_cr(ds):
        px = ds.pixel_array.astype(np.float64)
        ds.Modality = "CR"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.WindowCenter = "%d" % int(px.mean())
        ds.WindowWidth = "%d" % max(2, int((px.max() - px.min()) / 2))
    cr = os.path.join(root, "cr", "cr_01.dcm")
    os.makedirs(os.path.dirname(cr), exist_ok=True)
    _copy_with_uids(os.path.join(PYDICOM_FILES, "CT_small.dcm"), cr, UID_ROOT + "3.3.1", cr_series, cr_study, 1, to_cr)
    add(cr, UID_ROOT + "3.3.1", cr_series, cr_study, 1, "CR MONOCHROME1", cr)

    # colour: RGB RLE with two frames, YBR_FULL_422 uncompressed (own study)
    sc_study, sc_series = UID_ROOT + "4.1", UID_ROOT + "4.2"
    os.makedirs(os.path.join(root, "sc"), exist_ok=True)
    for i, (name, kind) in enumerate((("SC_rgb_rle_2frame.dcm", "RGB RLE 2 frames"),
                                      ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422")), 1):
        dst = os.path.join(root, "sc", "sc_%02d.dcm" % i)
        sop = UID_ROOT + "4.3.%d" % i
        _copy_with_uids(os.path.join(PYDICOM_FILES, name), dst, sop, sc_series, sc_study, i)
        add(dst, sop, sc_series, sc_study, i, kind, dst)
        out[-1]["color"] = True
    # JPEG baseline (YBR_FULL_422, lossy) and RLE (lossless) copies of the same colour-bar picture
    for i, (name, kind) in enumerate((("SC_rgb_dcmtk_+eb+cy+np.dcm", "JPEG baseline YBR_FULL_422"),
                                      ("SC_rgb_rle.dcm", "RGB RLE")), 4):
        dst = os.path.join(root, "sc", "sc_%02d.dcm" % i)
        sop = UID_ROOT + "4.3.%d" % i
        _copy_with_uids(os.path.join(PYDICOM_FILES, name), dst, sop, sc_series, sc_study, i)
        add(dst, sop, sc_series, sc_study, i, kind, dst)
        out[-1]["color"] = True
    # the RLE file decompressed by gdcmconv: a native multi-frame file
    sop = UID_ROOT + "4.3.3"
    tmp = os.path.join(root, "sc", ".tmp.dcm")
    _copy_with_uids(os.path.join(PYDICOM_FILES, "SC_rgb_rle_2frame.dcm"), tmp, sop, sc_series, sc_study, 3)
    dst = os.path.join(root, "sc", "sc_03.dcm")
    _gdcmconv("-w", tmp, dst)
    os.unlink(tmp)
    add(dst, sop, sc_series, sc_study, 3, "RGB native 2 frames", dst)
    out[-1]["color"] = True
    return out


def instance_doc(f):
    st = os.stat(f["path"])
    return {"_id": f["sop"], "series_id": f["series"], "study_id": f["study"], "paths": [f["path"]],
            "instance_number": f["number"], "dicom": {"transfer_syntax": f["ts"]},
            "file": {"size": st.st_size, "mtime": int(st.st_mtime)}, "metadata": {}}


def seed(db, files):
    """Instances, series and studies documents for the archive's files."""
    db.instances.insert_many([instance_doc(f) for f in files])
    series = {}
    for f in files:
        series.setdefault(f["series"], {"_id": f["series"], "study_id": f["study"], "instance_count": 0})
        series[f["series"]]["instance_count"] += 1
    db.series.insert_many(list(series.values()))
    db.studies.insert_many([{"_id": s} for s in sorted({f["study"] for f in files})])


def split_multipart(body, content_type):
    """[(headers dict lower-case, payload bytes)] of a multipart/related body."""
    b = None
    for part in content_type.split(";"):
        k, _, v = part.strip().partition("=")
        if k.lower() == "boundary":
            b = v.strip('"')
    if not b:
        raise AssertionError("no boundary in %r" % content_type)
    delim = b"--" + b.encode()
    parts = []
    chunks = body.split(b"\r\n" + delim)
    first = chunks[0]
    if not first.startswith(delim):
        raise AssertionError("body does not start with the boundary")
    chunks[0] = first[len(delim):]
    for c in chunks:
        if c.startswith(b"--"):
            break
        head, _, payload = c[2:].partition(b"\r\n\r\n")
        hdrs = {}
        for line in head.split(b"\r\n"):
            k, _, v = line.decode().partition(":")
            hdrs[k.strip().lower()] = v.strip()
        parts.append((hdrs, payload))
    return parts


def read_png(data):
    """(array uint8 HxW or HxWx3) of an 8-bit non-interlaced grey or RGB PNG (what metadb writes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            if depth != 8 or ctype not in (0, 2) or interlace:
                raise AssertionError("unexpected PNG format")
            ch = 1 if ctype == 0 else 3
        elif typ == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(h, w) if ch == 1 else out.reshape(h, w, 3)


def reset_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
