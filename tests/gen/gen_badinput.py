#!/usr/bin/python3
"""Generate the bad-input corpus: every kind of file a messy archive holds.

Usage: /usr/bin/python3 tests/gen/gen_badinput.py --out DIR [--seed N]

Cases: valid file, truncated copies at many offsets, files whose Pixel Data
is cut short (native and encapsulated; catalogued and flagged), zero length, random
bytes and text with a .dcm name, a 4 MB private tag, 64-deep nested
sequences, lying length fields (one claiming ~2 GB), an unterminated
undefined-length sequence, a raw data set without preamble, invalid/lying/
mixed/unknown character sets, duplicate UIDs across files, a missing UID, a
DICOMDIR, a FIFO named .dcm, an unreadable file, a directory symlink loop and
a symlink escaping the tree.

Writes DIR/<case files> and DIR/expected.json, a list of
{path, case, expect} where expect is "document" (a correct document must be
built; with "integrity": the file is damaged and its event and instance
document must carry exactly that object, files without the key must carry
none), "dlq" (exactly one DLQ record with a reason; with "reason": that one)
or "either" (a document
or a DLQ record is acceptable, e.g. a truncated copy whose cut fell after
every attribute the feature sets ask for). The corpus is deterministic from
the seed. The directory symlink loop and the unreadable file are created
too; they are listed with expect "none" (loop: never followed, nothing
published) and "either" (root can still read a 0400 file).
"""
import argparse
import json
import os
import random
import struct
import sys

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT_UID = "1.2.826.0.1.3680043.10.1047."


def uid(rng, *parts):
    return ROOT_UID + ".".join(str(p) for p in parts) + "." + str(rng.randrange(10**9))


def base_dataset(rng, study, series, sop, charset=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT_UID + "1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = "BAD-0001"
    ds.PatientName = "Bad^Input"
    ds.AccessionNumber = "BAD0001"
    ds.StudyDate = "20010203"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = rng.randrange(1, 500)
    ds.SliceThickness = "1.25"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(8 * 8 * 2)
    return ds


def write(ds, path):
    ds.save_as(path, write_like_original=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    expected = []
    study = uid(rng, 1)
    series = uid(rng, 2)

    def add(name, case, expect):
        expected.append({"path": os.path.join(out, name), "case": case, "expect": expect})

    # A valid reference file, then truncated copies at many offsets.
    good = base_dataset(rng, study, series, uid(rng, 3))
    write(good, os.path.join(out, "good.dcm"))
    add("good.dcm", "valid", "document")
    blob = open(os.path.join(out, "good.dcm"), "rb").read()
    for i, cut in enumerate(sorted(set([1, 64, 128, 131, 132, 140, 200, 260, 300, 400, len(blob) // 2, len(blob) - 200]))):
        if cut >= len(blob):
            continue
        name = "trunc_%03d_%d.dcm" % (i, cut)
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob[:cut])
        add(name, "truncated", "either")

    # Zero length, random bytes with a .dcm name, a text file.
    open(os.path.join(out, "empty.dcm"), "wb").close()
    add("empty.dcm", "zero_length", "dlq")
    for i in range(3):
        name = "random_%d.dcm" % i
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(rng.randrange(10, 5000))))
        add(name, "random_bytes", "dlq")
    with open(os.path.join(out, "notes.dcm"), "w") as f:
        f.write("this is not a DICOM file\n" * 20)
    add("notes.dcm", "text_file", "dlq")

    # A huge private tag (4 MB) before pixel data.
    ds = base_dataset(rng, study, series, uid(rng, 4))
    ds.add_new(0x00090010, "LO", "METADB BADINPUT")
    ds.add_new(0x00091001, "OB", bytes(4 * 1024 * 1024))
    write(ds, os.path.join(out, "huge_private.dcm"))
    add("huge_private.dcm", "huge_private_tag", "either")

    # Deeply nested sequences (depth 64).
    ds = base_dataset(rng, study, series, uid(rng, 5))
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(64):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    ds.ReferencedImageSequence = Sequence([inner])
    write(ds, os.path.join(out, "deep_nesting.dcm"))
    add("deep_nesting.dcm", "deep_sequences", "either")

    # Lying length fields: a PatientID element claiming 0xFFFFFFF0 bytes.
    good_blob = bytearray(blob)
    idx = good_blob.find(b"\x10\x00\x20\x00LO")
    if idx > 0:
        lie = bytearray(good_blob)
        # explicit VR LO has a 2-byte length; turn it into a UN with a 4-byte huge length
        lie[idx + 4:idx + 8] = b"UN\x00\x00"
        lie[idx + 8:idx + 8] = struct.pack("<I", 0xFFFFFFF0)
        with open(os.path.join(out, "lying_length.dcm"), "wb") as f:
            f.write(lie)
        add("lying_length.dcm", "lying_length", "either")
    lie2 = bytearray(blob)
    idx = lie2.find(b"\x08\x00\x50\x00SH")  # AccessionNumber length → larger than the file
    if idx > 0:
        lie2[idx + 6:idx + 8] = struct.pack("<H", 0xFFFF)
        with open(os.path.join(out, "lying_length2.dcm"), "wb") as f:
            f.write(lie2)
        add("lying_length2.dcm", "lying_length", "either")

    # Character sets: declared Latin-1 with valid bytes, invalid UTF-8 under ISO_IR 192,
    # a declared set that lies (GBK bytes under ISO_IR 100), mixed ISO 2022.
    def charset_file(name, charset, raw_name):
        d = base_dataset(rng, study, series, uid(rng, 6, len(expected)), charset)
        d.PatientName = raw_name
        path = os.path.join(out, name)
        write(d, path)
        return path

    charset_file("latin1.dcm", "ISO_IR 100", "Buc^J\xe9r\xf4me")
    add("latin1.dcm", "charset_latin1", "document")
    p = charset_file("bad_utf8.dcm", "ISO_IR 192", "PLACEHOLDER")
    # same length as the placeholder (11 bytes), so every length field stays true
    data = open(p, "rb").read().replace(b"PLACEHOLDER", b"Bad\xff\xfeName^X")
    open(p, "wb").write(data)
    add("bad_utf8.dcm", "charset_invalid_utf8", "document")
    p = charset_file("lying_charset.dcm", "ISO_IR 100", "PLACEHOLDER")
    data = open(p, "rb").read().replace(b"PLACEHOLDER", "王^小明".encode("gbk") + b"ABCD")
    open(p, "wb").write(data)
    add("lying_charset.dcm", "charset_lying", "document")
    p = charset_file("iso2022_mixed.dcm", "\\ISO 2022 IR 87", "PLACEHOLDER")
    add("iso2022_mixed.dcm", "charset_iso2022", "document")
    p = charset_file("unknown_charset.dcm", "ISO_IR 999", "Plain^Name")
    add("unknown_charset.dcm", "charset_unknown", "document")

    # Duplicate UIDs across files: the same SOPInstanceUID in two files of the same series.
    dup = uid(rng, 7)
    for i in range(2):
        d = base_dataset(rng, study, series, dup)
        write(d, os.path.join(out, "dup_uid_%d.dcm" % i))
        add("dup_uid_%d.dcm" % i, "duplicate_uid", "document")

    # Missing UIDs.
    d = base_dataset(rng, study, series, uid(rng, 8))
    del d.StudyInstanceUID
    write(d, os.path.join(out, "no_study_uid.dcm"))
    add("no_study_uid.dcm", "missing_uid", "dlq")

    # A DICOMDIR (media storage directory).
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = uid(rng, 9)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT_UID + "1"
    dd = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    dd.is_little_endian = True
    dd.is_implicit_VR = False
    dd.FileSetID = "METADB"
    dd.DirectoryRecordSequence = Sequence([])
    dd.save_as(os.path.join(out, "DICOMDIR"), write_like_original=False)
    add("DICOMDIR", "dicomdir", "dlq")

    # A private OB element whose length claims ~2 GB at the end of the header.
    lie3 = bytearray(blob)
    idx = lie3.find(b"\xe0\x7f\x10\x00")  # PixelData: insert the liar before it
    if idx > 0:
        liar = struct.pack("<HH", 0x0011, 0x0010) + b"LO" + struct.pack("<H", 8) + b"METADB  "
        liar += struct.pack("<HH", 0x0011, 0x1001) + b"OB\x00\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\x01" * 64
        lie3[idx:idx] = liar
        with open(os.path.join(out, "lying_private_2gb.dcm"), "wb") as f:
            f.write(lie3[:idx + len(liar)])
        add("lying_private_2gb.dcm", "lying_length", "either")

    # An undefined-length sequence that is never closed (no delimitation items).
    unterminated = bytearray(blob)
    idx = unterminated.find(b"\xe0\x7f\x10\x00")
    if idx > 0:
        sq = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
        sq += (struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + struct.pack("<HH", 0x0008, 0x1150) + b"UI" +
               struct.pack("<H", 4) + b"1.2\x00") * 50
        with open(os.path.join(out, "unterminated_sequence.dcm"), "wb") as f:
            f.write(unterminated[:idx] + sq)
        add("unterminated_sequence.dcm", "unterminated_sequence", "either")

    # A raw data set: no preamble, no "DICM", no meta header (implicit VR little endian).
    raw = base_dataset(rng, study, series, uid(rng, 11))
    raw.is_implicit_VR = True
    raw.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    raw.preamble = None
    raw.save_as(os.path.join(out, "raw_dataset.dcm"), write_like_original=True)
    add("raw_dataset.dcm", "no_preamble", "either")

    # A named pipe with a .dcm name: opening it must never block a worker.
    fifo = os.path.join(out, "fifo.dcm")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    add("fifo.dcm", "fifo", "dlq")

    # Unreadable permissions (root still reads it; a non-root worker must DLQ it).
    d = base_dataset(rng, study, series, uid(rng, 10))
    write(d, os.path.join(out, "unreadable.dcm"))
    os.chmod(os.path.join(out, "unreadable.dcm"), 0)
    add("unreadable.dcm", "unreadable", "either")

    # Header whole, Pixel Data cut short (an archive copy that stopped early):
    # catalogued with an "integrity" object (expected exactly as listed), and
    # the job counts them in files_flagged. Each has its own SOPInstanceUID.
    def pixel_file(name, encapsulated=False):
        d = base_dataset(rng, study, series, uid(rng, 12, len(expected)))
        d.Rows = d.Columns = 64
        frame = bytes((i * 7) & 0xFF for i in range(64 * 64 * 2))
        if encapsulated:
            from pydicom.encaps import encapsulate
            d.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"  # JPEG lossless: fragments
            d.PixelData = encapsulate([frame[:3000], frame[3000:5000]], has_bot=False)
            d["PixelData"].VR = "OB"
            d["PixelData"].is_undefined_length = True
        else:
            d.PixelData = frame
        path = os.path.join(out, name)
        write(d, path)
        data = open(path, "rb").read()
        tag = data.rfind(b"\xe0\x7f\x10\x00")
        return path, data, tag

    path, data, tag = pixel_file("pixcut_native.dcm")
    vpos = tag + 12  # explicit VR OW: tag, VR, reserved, 4-byte length
    cut = vpos + 3000
    open(path, "wb").write(data[:cut])
    add("pixcut_native.dcm", "pixel_data_truncated", "document")
    expected[-1]["integrity"] = {"pixel_data_truncated": True, "pixel_data_bytes_expected": 8192,
                                 "pixel_data_bytes_present": 3000}
    path, data, tag = pixel_file("pixcut_at_value.dcm")
    open(path, "wb").write(data[:tag + 12])
    add("pixcut_at_value.dcm", "pixel_data_truncated", "document")
    expected[-1]["integrity"] = {"pixel_data_truncated": True, "pixel_data_bytes_expected": 8192,
                                 "pixel_data_bytes_present": 0}
    path, data, tag = pixel_file("pixcut_in_element_header.dcm")
    open(path, "wb").write(data[:tag + 6])
    add("pixcut_in_element_header.dcm", "pixel_data_truncated", "document")
    expected[-1]["integrity"] = {"pixel_data_truncated": True, "pixel_data_bytes_present": 0}
    path, data, tag = pixel_file("pixcut_encapsulated.dcm", encapsulated=True)
    # value: empty offset table item (8), fragment 1 (8 + 3000), fragment 2 (8 + 2000), delimiter (8);
    # the cut falls in fragment 2
    vpos = tag + 12
    open(path, "wb").write(data[:vpos + 8 + 3008 + 500])
    add("pixcut_encapsulated.dcm", "pixel_data_truncated", "document")
    expected[-1]["integrity"] = {"pixel_data_truncated": True, "pixel_data_bytes_expected": 8 + 3008 + 2008,
                                 "pixel_data_bytes_present": 8 + 3008 + 500, "pixel_data_encapsulated": True}
    # the same file whole: no integrity object
    pixel_file("pixel_whole_encapsulated.dcm", encapsulated=True)
    add("pixel_whole_encapsulated.dcm", "valid", "document")
    # cut inside the header (in the middle of PatientName): still refused
    path, data, tag = pixel_file("header_cut.dcm")
    at = data.find(b"Bad^Input")
    open(path, "wb").write(data[:at + 4])
    add("header_cut.dcm", "header_truncated", "dlq")
    expected[-1]["reason"] = "truncated"

    # A directory symlink loop: loop/self -> loop.
    os.makedirs(os.path.join(out, "loop"), exist_ok=True)
    link = os.path.join(out, "loop", "self")
    if not os.path.islink(link):
        os.symlink(os.path.join(out, "loop"), link)
    # and a file symlink escaping the tree
    esc = os.path.join(out, "escape.dcm")
    if not os.path.islink(esc):
        os.symlink("/etc/passwd", esc)
    add("escape.dcm", "symlink_escape", "dlq")

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print("bad-input corpus: %d files in %s" % (len(expected), out))


if __name__ == "__main__":
    sys.exit(main())
