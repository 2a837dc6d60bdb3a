#!/usr/bin/python3
"""Write the seed corpus of fuzz_extract (tests/fuzz/corpus/fuzz_extract/).

Small real files, one per shape the reader must handle: explicit/implicit VR
little endian, explicit big endian, deflated, no preamble, no meta header,
undefined-length and nested sequences, an item with its own character set,
a UN-encoded sequence, private tags, code-extension character sets, a
DICOMDIR, plus a slice of tests/gen/gen_archive.py output. Pixel data is kept
tiny (the reader stops before it anyway). Deterministic.

usage: /usr/bin/python3 tests/fuzz/gen_extract_corpus.py [OUT_DIR]
"""
import io
import os
import sys
import zlib

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

ROOT = "1.2.826.0.1.3680043.10.1234.77."


def base(charset="ISO_IR 100"):
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = ROOT + "3"
    ds.StudyDate = "20010203"
    ds.AccessionNumber = "A1"
    ds.Modality = "CT"
    ds.StudyDescription = "Thorax"
    code = Dataset()
    code.CodeValue = "C1"
    code.CodingSchemeDesignator = "L"
    code.CodeMeaning = "Chest"
    ds.ProcedureCodeSequence = Sequence([code])
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "LO", "private")
    ds.PatientName = "Doe^John"
    ds.PatientID = "P1"
    ds.SliceThickness = "2.5"
    ds.KVP = "120"
    ds.StudyInstanceUID = ROOT + "1"
    ds.SeriesInstanceUID = ROOT + "2"
    ds.SeriesNumber = "3"
    ds.InstanceNumber = "4"
    ds.ImagePositionPatient = ["-1", "2.5", "3"]
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 1
    ds.add_new(0x00280120, "SS", -2000)
    ds.PixelData = b"\x00\x01" * 4
    return ds


def save(ds, path, ts, preamble=True, meta=True):
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")
    fm.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", ROOT + "9")
    fm.TransferSyntaxUID = ts
    fm.ImplementationClassUID = ROOT + "100"
    f = FileDataset(path, ds, file_meta=fm, preamble=b"\0" * 128 if preamble else None)
    f.is_little_endian = ts != ExplicitVRBigEndian
    f.is_implicit_VR = ts == ImplicitVRLittleEndian
    if meta:
        f.save_as(path, write_like_original=False)
        return
    buf = io.BytesIO()
    from pydicom.filebase import DicomFileLike
    fp = DicomFileLike(buf)
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    open(path, "wb").write(buf.getvalue())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "fuzz_extract")
    os.makedirs(out, exist_ok=True)
    save(base(), os.path.join(out, "explicit_le.dcm"), ExplicitVRLittleEndian)
    save(base(), os.path.join(out, "implicit_le.dcm"), ImplicitVRLittleEndian)
    save(base(), os.path.join(out, "explicit_be.dcm"), ExplicitVRBigEndian)
    save(base(), os.path.join(out, "deflated.dcm"), DeflatedExplicitVRLittleEndian)
    save(base(), os.path.join(out, "no_preamble.dcm"), ExplicitVRLittleEndian, preamble=False)
    save(base(), os.path.join(out, "no_meta.dcm"), ExplicitVRLittleEndian, meta=False)

    ds = base()
    inner = Dataset()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    inner.ReferencedSOPInstanceUID = ROOT + "5"
    mid = Dataset()
    mid.ReferencedImageSequence = Sequence([inner, inner])
    ds.ReferencedStudySequence = Sequence([mid])
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    item.CodeMeaning = "été"
    ds.AnatomicRegionSequence = Sequence([item])
    for seq in ("ReferencedStudySequence", "AnatomicRegionSequence", "ProcedureCodeSequence"):
        ds[seq].is_undefined_length = True
        for it in ds[seq].value:
            it.is_undefined_length_sequence_item = True
    save(ds, os.path.join(out, "undefined_sequences.dcm"), ExplicitVRLittleEndian)

    ds = base("\\ISO 2022 IR 87")
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    save(ds, os.path.join(out, "iso2022_jp.dcm"), ExplicitVRLittleEndian)
    ds = base("\\ISO 2022 IR 149")
    ds.PatientName = "Hong^Gildong=洪^吉洞=홍^길동"
    save(ds, os.path.join(out, "iso2022_kr.dcm"), ImplicitVRLittleEndian)
    ds = base("GB18030")
    ds.PatientName = "Wang^XiaoDong=王^小东"
    save(ds, os.path.join(out, "gb18030.dcm"), ExplicitVRLittleEndian)

    # a sequence encoded as UN with undefined length (implicit VR inside),
    # spliced in as raw bytes: pydicom would turn a UN of a known SQ back into SQ
    raw = io.BytesIO()
    from pydicom.filebase import DicomFileLike
    fp = DicomFileLike(raw)
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    item = Dataset()
    item.CodeValue = "X"
    write_dataset(fp, item)
    body = raw.getvalue()
    un = (b"\x08\x00\x18\x22UN\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0" + len(body).to_bytes(4, "little")
          + body + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    path = os.path.join(out, "un_sequence.dcm")
    save(base(), path, ExplicitVRLittleEndian)
    data = open(path, "rb").read()
    at = data.find(b"\x09\x00\x10\x00LO")
    open(path, "wb").write(data[:at] + un + data[at:])

    dd = Dataset()
    dd.FileSetID = "FUZZ"
    dd.DirectoryRecordSequence = Sequence([])
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    fm.MediaStorageSOPInstanceUID = ROOT + "8"
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = ROOT + "100"
    f = FileDataset(None, dd, file_meta=fm, preamble=b"\0" * 128)
    f.is_little_endian, f.is_implicit_VR = True, False
    f.save_as(os.path.join(out, "DICOMDIR"), write_like_original=False)

    # one file of the synthetic archive (its pixel data cut to a few bytes)
    here = os.path.dirname(os.path.abspath(__file__))
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(here, "..", "gen", "gen_archive.py"), "--out", tmp,
                        "--patients", "12", "--seed", "4", "--small", "--slices", "1:1", "--jobs", "1"],
                       check=True, capture_output=True)
        import json
        man = json.load(open(os.path.join(tmp, "manifest.json")))
        picked = {}
        for inst in man["instances"]:
            se = next(s for s in man["series"] if s["uid"] == inst["series_uid"])
            kind = (se["modality"], se["transfer_syntax"])
            if kind not in picked:
                picked[kind] = inst["path"]
        for (mod, ts), p in sorted(picked.items()):
            data = open(p, "rb").read()
            cut = data.find(b"\xe0\x7f\x10\x00")
            open(os.path.join(out, "gen_%s_%s.dcm" % (mod, ts)), "wb").write(data[:cut + 16] if cut > 0 else data)
    print("corpus: %d files in %s" % (len(os.listdir(out)), out))


if __name__ == "__main__":
    main()
