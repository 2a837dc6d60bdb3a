#!/usr/bin/python3
"""Synthetic LIDC-IDRI-like DICOM archive generator (ground truth for tests).

Writes, deterministically from --seed:

    OUT/LIDC-IDRI-0001/<study dir>/<series dir>/1-001.dcm ...   (+ NNN.xml annotation files)
    OUT/manifest.json                                            (what was written)

Patients have one CT study (a helical chest CT series, sometimes a localizer
and a second reconstruction) and a few also have a CR or DX chest study.
Headers carry the attributes of conf/*Features.txt that such scanners write:
accession numbers, UIDs, dates, DS/IS/US/FD numbers, multi-valued attributes,
a private block, and nested sequences (ProcedureCodeSequence,
RequestAttributesSequence > ScheduledProtocolCodeSequence, ViewCodeSequence
for DX, AnatomicRegionSequence for CR/DX). Most studies are ISO_IR 100 with
Latin-1 text; a few are ISO_IR 192 (UTF-8) with Greek/Japanese/Cyrillic text.
Transfer syntaxes: explicit VR little endian, and implicit VR little endian
for about a third of the series.

Pixel data: 512x512 16-bit (default) or 32x32 with --small (Rows/Columns
follow the pixel data).

Usage:
    /usr/bin/python3 tests/gen/gen_archive.py --out DIR --patients N --seed S [--small]
        [--files N] [--slices MIN:MAX] [--missing-accession FRACTION] [--jobs J]

--files N makes the archive hold exactly N DICOM instances (the slices of the
main CT series are scaled); without --patients it picks the patient count.

manifest.json (all strings already decoded to Unicode; numbers typed as the
extractor types them: DS/IS -> number):
    {"generator": "gen_archive.py", "version": 1, "seed", "small", "root": absolute OUT,
     "counts": {"patients", "studies", "series", "instances", "xml_files"},
     "patients":  [{"patient_id", "patient_name", "birth_date", "sex", "studies": [uid]}],
     "studies":   [{"uid", "accession", "patient_id", "date", "time", "modality", "description",
                    "charset", "series": [uid], "dir"}],
     "series":    [{"uid", "study_uid", "number", "description", "modality", "body_part",
                    "slice_thickness", "manufacturer", "model", "kvp", "transfer_syntax",
                    "instance_count", "dir"}],
     "instances": [{"sop_uid", "series_uid", "study_uid", "instance_number", "path", "relpath"}],
     "xml_files": [{"path", "relpath", "series_uid"}]}
"path" values are absolute (OUT made absolute), "relpath" relative to OUT.
The accession of a study is "" when --missing-accession removed it.
"""

import argparse
import json
import multiprocessing
import os
import random
import struct
import sys

try:
    import numpy as np
    import pydicom
    from pydicom.charset import convert_encodings
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element, write_file_meta_info
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
except ImportError as e:  # pragma: no cover
    sys.exit("gen_archive.py needs Debian's /usr/bin/python3 with python3-pydicom and numpy: %s" % e)

UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
IMPL_UID = "1.2.826.0.1.3680043.10.1234.1"  # implementation class UID of this generator
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
CR_SOP = "1.2.840.10008.5.1.4.1.1.1"
DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"

SCANNERS = [
    # manufacturer, model, software, kernel, filter
    ("GE MEDICAL SYSTEMS", "LightSpeed16", "LightSpeedverrel", "STANDARD", "BODY FILTER"),
    ("GE MEDICAL SYSTEMS", "LightSpeed Ultra", "LightSpeedApps2.5_hp.me", "LUNG", "BODY FILTER"),
    ("SIEMENS", "Sensation 16", "syngo CT 2005A", "B30f", "0"),
    ("SIEMENS", "Emotion 6", "VA70C", "B50f", "0"),
    ("TOSHIBA", "Aquilion", "V2.04ER003", "FC01", "LARGE"),
    ("Philips", "Brilliance 16P", "2.3.0", "C", "B"),
]
XR_UNITS = [
    ("FUJIFILM Corporation", "FCR5000", "A07-03"),
    ("Agfa", "ADC_5146", "VIPS 1.2"),
    ("GE Healthcare", "Thunder Platform", "dm_Platform_release"),
]
LATIN1_INSTITUTIONS = ["Hôpital Saint-Éloi", "Universitätsklinikum Köln", "Hospital Nuestra Señora",
                       "Clinique Genève", "Sjukhuset Malmö"]
UTF8_TEXTS = [("ISO_IR 192", "Θώρακας χωρίς σκιαγραφικό", "Νοσοκομείο Αθηνών"),
              ("ISO_IR 192", "胸部CT 単純", "東京総合病院"),
              ("ISO_IR 192", "КТ грудной клетки", "Городская больница №1")]
CT_STUDY_DESC = ["CT CHEST W/O CONTRAST", "CHEST", "THORAX^01_LUNG_ROUTINE (Adult)", "CT THORAX WITH CONTRAST",
                 "Chest Screening", "LUNG NODULE F/U"]
CT_SERIES_DESC = ["Recon 2: LUNG 1.25MM", "AXIAL", "Lung 1.0 B50f", "1.25mm Std", "THIN LUNG", "Chest 2.5 mm"]


def uid(rng):
    return UID_ROOT + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(27))


def dicom_date(rng, y0=1998, y1=2006):
    return "%04d%02d%02d" % (rng.randint(y0, y1), rng.randint(1, 12), rng.randint(1, 28))


def dicom_time(rng):
    return "%02d%02d%02d.%06d" % (rng.randint(7, 18), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999))


def ds_str(x):
    """A DS value as a scanner writes it (at most 16 chars, no exponent)."""
    s = ("%.6f" % x).rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


def tcia_name(text):
    out = "".join(c if (c.isascii() and (c.isalnum() or c in " ._")) else "_" for c in text).strip()
    return (out or "NA")[:48]


def code_item(value, scheme, meaning):
    it = Dataset()
    it.CodeValue = value
    it.CodingSchemeDesignator = scheme
    it.CodeMeaning = meaning
    return it


# ---------------------------------------------------------------- structure

def plan_archive(args):
    """The whole archive as plain dicts (no I/O), deterministic from the seed."""
    patients, studies, series = [], [], []
    for p in range(args.patients):
        rng = random.Random("%d:patient:%d" % (args.seed, p))
        pid = "LIDC-IDRI-%04d" % (p + 1)
        sex = rng.choice(["M", "F", "O"])
        birth = dicom_date(rng, 1925, 1960)
        pat = {"patient_id": pid, "patient_name": pid, "birth_date": birth, "sex": sex, "studies": []}
        patients.append(pat)
        nstudies = 1 + (1 if rng.random() < args.second_study else 0)
        for s in range(nstudies):
            modality = "CT" if s == 0 else rng.choice(["CR", "DX"])
            charset_roll = rng.random()
            if charset_roll < 0.08:
                charset, desc, inst = rng.choice(UTF8_TEXTS)
            elif charset_roll < 0.30:
                charset, desc, inst = "ISO_IR 100", rng.choice(CT_STUDY_DESC) if modality == "CT" else "CHEST PA/LAT", \
                    rng.choice(LATIN1_INSTITUTIONS)
            else:
                charset, desc, inst = "ISO_IR 100", rng.choice(CT_STUDY_DESC) if modality == "CT" else "CHEST PA/LAT", \
                    "ANONYMOUS"
            st_uid = uid(rng)
            date = dicom_date(rng)
            accession = "%02d%06d%d" % (rng.randint(10, 99), p + 1, s)
            if rng.random() < args.missing_accession:
                accession = ""
            study = {"uid": st_uid, "accession": accession, "patient_id": pid, "date": date,
                     "time": dicom_time(rng), "modality": modality, "description": desc, "charset": charset,
                     "series": [], "institution": inst, "study_id": str(rng.randint(1, 99999)),
                     "age": "%03dY" % max(1, int(date[:4]) - int(birth[:4])),
                     "dir": "%s-%s-%s-NA-%s-%s" % (date[4:6], date[6:8], date[:4], tcia_name(desc), st_uid[-5:])}
            studies.append(study)
            pat["studies"].append(st_uid)
            for se in plan_series(rng, args, study):
                series.append(se)
                study["series"].append(se["uid"])
    return patients, studies, series


def plan_series(rng, args, study):
    out = []
    smin, smax = args.slices
    if study["modality"] == "CT":
        scanner = rng.choice(SCANNERS)
        thickness = rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0])
        kvp = rng.choice([120, 120, 120, 135, 140])
        base_num = rng.choice([1, 2, 3, 1000, 3000566])
        kinds = [("main", rng.randint(smin, smax))]
        if rng.random() < 0.35:
            kinds.insert(0, ("localizer", rng.randint(1, 2)))
        if rng.random() < 0.20:
            kinds.append(("recon", max(1, rng.randint(smin, smax) // 2)))
        for i, (kind, n) in enumerate(kinds):
            desc = {"main": rng.choice(CT_SERIES_DESC), "localizer": "Scout", "recon": "Recon 3: MEDIASTINUM"}[kind]
            se_uid = uid(rng)
            number = base_num + i
            out.append({"uid": se_uid, "study_uid": study["uid"], "number": number, "description": desc,
                        "modality": "CT", "body_part": "CHEST", "kind": kind,
                        "slice_thickness": thickness if kind != "localizer" else 0.5,
                        "manufacturer": scanner[0], "model": scanner[1], "software": scanner[2],
                        "kernel": scanner[3], "filter": scanner[4], "kvp": kvp,
                        "transfer_syntax": "implicit" if rng.random() < 0.33 else "explicit",
                        "instance_count": n, "frame_uid": uid(rng),
                        "xml": "%03d.xml" % rng.randint(60, 800) if kind == "main" and rng.random() < 0.8 else None,
                        "dir": "%d.000000-%s-%s" % (number, tcia_name(desc), se_uid[-5:]),
                        "rng_seed": rng.randint(0, 2**31)})
    else:
        unit = rng.choice(XR_UNITS)
        for i in range(rng.randint(1, 2)):
            se_uid = uid(rng)
            desc = rng.choice(["PA", "LAT", "AP"]) if i == 0 else "LAT"
            number = i + 1
            out.append({"uid": se_uid, "study_uid": study["uid"], "number": number, "description": desc,
                        "modality": study["modality"], "body_part": "CHEST", "kind": "xr",
                        "slice_thickness": None, "manufacturer": unit[0], "model": unit[1], "software": unit[2],
                        "kernel": None, "filter": None, "kvp": rng.choice([110, 117, 120, 125]),
                        "transfer_syntax": "explicit", "instance_count": 1, "frame_uid": None, "xml": None,
                        "dir": "%d.000000-%s-%s" % (number, tcia_name(desc), se_uid[-5:]),
                        "rng_seed": rng.randint(0, 2**31)})
    return out


def rescale_to_files(series, target):
    """Scale the main CT series so that the archive holds exactly target instances."""
    fixed = sum(s["instance_count"] for s in series if s["kind"] != "main")
    mains = [s for s in series if s["kind"] == "main"]
    if not mains or target < fixed + len(mains):
        sys.exit("gen_archive.py: --files %d is too small for %d series; use fewer --patients" %
                 (target, len(series)))
    budget = target - fixed
    weights = [s["instance_count"] for s in mains]
    total = sum(weights)
    counts = [max(1, budget * w // total) for w in weights]
    i = 0
    while sum(counts) < budget:
        counts[i % len(counts)] += 1
        i += 1
    while sum(counts) > budget:
        j = max(range(len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    for s, c in zip(mains, counts):
        s["instance_count"] = c


# ---------------------------------------------------------------- writing

def base_dataset(study, pat, se, small):
    rng = random.Random(se["rng_seed"])
    ds = Dataset()
    ds.SpecificCharacterSet = study["charset"]
    ct = se["modality"] == "CT"
    if ct:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if se["kind"] == "localizer" else "AXIAL"]
        ds.SOPClassUID = CT_SOP
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SOPClassUID = CR_SOP if se["modality"] == "CR" else DX_SOP
    ds.InstanceCreationDate = study["date"]
    ds.InstanceCreationTime = study["time"][:6]
    ds.StudyDate = study["date"]
    ds.SeriesDate = study["date"]
    ds.AcquisitionDate = study["date"]
    ds.ContentDate = study["date"]
    ds.StudyTime = study["time"]
    ds.SeriesTime = study["time"]
    ds.AccessionNumber = study["accession"]
    ds.Modality = se["modality"]
    ds.Manufacturer = se["manufacturer"]
    ds.InstitutionName = study["institution"]
    ds.ReferringPhysicianName = ""
    ds.StationName = "CTAWP%05d" % rng.randint(0, 99999) if ct else "XR%03d" % rng.randint(0, 999)
    ds.StudyDescription = study["description"]
    ds.SeriesDescription = se["description"]
    ds.ManufacturerModelName = se["model"]
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = UID_ROOT + "1" + study["uid"][-27:]
    ds.ReferencedStudySequence = Sequence([ref])
    ds.PatientName = pat["patient_name"]
    ds.PatientID = pat["patient_id"]
    ds.PatientBirthDate = pat["birth_date"]
    ds.PatientSex = pat["sex"]
    ds.PatientAge = study["age"]
    ds.PatientWeight = ds_str(rng.uniform(45, 110))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DCM:113100/113105/113107/113108/113109/113111"
    ds.BodyPartExamined = se["body_part"]
    ds.KVP = ds_str(se["kvp"])
    ds.SoftwareVersions = se["software"]
    ds.ProtocolName = "CHEST_ROUTINE" if ct else "CHEST_" + se["description"]
    ds.PatientPosition = "FFS" if ct else ""
    ds.ProcedureCodeSequence = Sequence([code_item("CTCHEST" if ct else "XRCHEST", "L", study["description"])])
    ra = Dataset()
    ra.RequestedProcedureID = "RP%06d" % rng.randint(0, 999999)
    ra.ScheduledProcedureStepID = "SPS%05d" % rng.randint(0, 99999)
    ra.ScheduledProcedureStepDescription = study["description"]
    ra.ScheduledProtocolCodeSequence = Sequence([code_item("P5-0800" if ct else "P5-0900", "SRT",
                                                           "CT of chest" if ct else "Chest X-ray")])
    ds.RequestAttributesSequence = Sequence([ra])
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = se["uid"]
    ds.StudyID = study["study_id"]
    ds.SeriesNumber = str(se["number"])
    ds.AcquisitionNumber = "1"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.PositionReferenceIndicator = "SN" if ct else ""
    if ct:
        ds.ScanOptions = "SCOUT MODE" if se["kind"] == "localizer" else "HELICAL MODE"
        ds.SliceThickness = ds_str(se["slice_thickness"])
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = ds_str(rng.choice([320, 340, 360, 380, 400]))
        ds.DistanceSourceToDetector = "949.075012"
        ds.DistanceSourceToPatient = "541"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = ds_str(rng.uniform(120, 180))
        ds.RotationDirection = "CW"
        ds.ExposureTime = str(rng.randint(400, 1000))
        ds.XRayTubeCurrent = str(rng.randint(40, 450))
        ds.Exposure = str(rng.randint(3, 20))
        ds.FilterType = se["filter"]
        ds.GeneratorPower = str(rng.choice([24000, 48000, 60000]))
        ds.FocalSpots = ["0.7", "1.2"] if rng.random() < 0.5 else "1.2"
        ds.ConvolutionKernel = se["kernel"]
        ds.RevolutionTime = 0.5
        ds.SingleCollimationWidth = 1.25
        ds.TotalCollimationWidth = 20.0
        ds.TableSpeed = 27.5
        ds.TableFeedPerRotation = 13.75
        ds.SpiralPitchFactor = 1.375
        ds.FrameOfReferenceUID = se["frame_uid"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [ds_str(0.703125), ds_str(0.703125)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue
        ds.WindowCenter = ["-600", "40"]
        ds.WindowWidth = ["1600", "400"]
        ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        # a private block, as GE writes one
        ds.add_new(0x00090010, "LO", "GEMS_IDEN_01")
        ds.add_new(0x00091001, "LO", "GE_GENESIS_FF")
        ds.add_new(0x00091002, "SH", "CT01")
    else:
        ds.ViewPosition = se["description"] if se["description"] in ("PA", "AP") else "LL"
        ds.ExposureTime = str(rng.randint(5, 40))
        ds.XRayTubeCurrent = str(rng.randint(100, 500))
        ds.Exposure = str(rng.randint(1, 10))
        ds.ExposureInuAs = str(rng.randint(1000, 9000))
        ds.DistanceSourceToDetector = "1800"
        ds.DistanceSourceToPatient = "1650"
        ds.ImagerPixelSpacing = ["0.1", "0.1"]
        ds.Grid = ["IN", "FOCUSED"]
        ds.GridFocalDistance = "1800"
        ds.PatientOrientation = ["P", "F"]
        ds.AnatomicRegionSequence = Sequence([code_item("T-D3000", "SRT", "Chest")])
        ds.ViewCodeSequence = Sequence([code_item("R-10214" if ds.ViewPosition == "PA" else "R-10206", "SRT",
                                                  "postero-anterior" if ds.ViewPosition == "PA" else "lateral")])
        if se["modality"] == "CR":
            ds.PlateType = "ST-VI"
            ds.CassetteOrientation = "PORTRAIT"
            ds.CassetteSize = "35CMX43CM"
            ds.Sensitivity = ds_str(rng.uniform(100, 400))
            ds.AcquisitionDeviceProcessingDescription = "CHEST,PA"
            ds.AcquisitionDeviceProcessingCode = "1"
            ds.PhotometricInterpretation = "MONOCHROME1"
            ds.PresentationLUTShape = "IDENTITY"
        else:
            ds.DetectorType = "SCINTILLATOR"
            ds.DetectorConfiguration = "AREA"
            ds.DetectorID = "DX%04d" % rng.randint(0, 9999)
            ds.DetectorBinning = ["1", "1"]
            ds.DetectorTemperature = ds_str(rng.uniform(20, 30))
            ds.DateOfLastDetectorCalibration = study["date"]
            ds.DetectorElementSpacing = ["0.2", "0.2"]
            ds.DetectorElementPhysicalSize = ["0.2", "0.2"]
            ds.FieldOfViewShape = "RECTANGLE"
            ds.FieldOfViewDimensions = ["430", "430"]
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.PresentationLUTShape = "INVERSE"
        ds.PixelSpacing = ["0.1", "0.1"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "2048"
        ds.WindowWidth = "4096"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    n = 32 if small else 512
    ds.Rows = n
    ds.Columns = n
    ds.LossyImageCompression = "00"
    if study["institution"] != "ANONYMOUS":
        ds.ImageComments = "Aufnahme: %s" % study["institution"] if study["charset"] == "ISO_IR 100" else study[
            "institution"]
    return ds


def base_pixels(se, small):
    n = 32 if small else 512
    rs = np.random.RandomState(se["rng_seed"] % (2**32))
    y, x = np.mgrid[0:n, 0:n]
    r = np.hypot(x - n / 2, y - n / 2)
    img = np.where(r < n * 0.42, 40, -1000).astype(np.int16)
    img = img + rs.randint(-20, 20, size=(n, n)).astype(np.int16)
    if se["modality"] != "CT":
        img = (img + 1100).clip(0, 4095).astype(np.uint16)
    return img


def encode_element(elem, implicit, encodings):
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_data_element(fp, elem, encodings)
    return fp.getvalue()


# attributes that change from one instance of a series to the next
VARYING = (0x00080018, 0x00080032, 0x00080033, 0x00200013, 0x00200032, 0x00201041, 0x00280106)


def write_series(task):
    """Write one series. The constant attributes are encoded once per series
    and only the per-instance ones per file (pydicom's element writer either
    way), which makes large archives several times faster to generate."""
    study, pat, se, out, small = task
    sdir = os.path.join(out, pat["patient_id"], study["dir"], se["dir"])
    os.makedirs(sdir, exist_ok=True)
    ds = base_dataset(study, pat, se, small)
    pixels = base_pixels(se, small)
    implicit = se["transfer_syntax"] == "implicit"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPL_UID
    meta.ImplementationVersionName = "METADB_GEN_1"
    encodings = convert_encodings(ds.SpecificCharacterSet)
    constant = {int(t): encode_element(ds[t], implicit, encodings) for t in ds.keys() if int(t) not in VARYING}
    pixel_header = (b"\xe0\x7f\x10\x00" + (b"" if implicit else b"OW\x00\x00") +
                    struct.pack("<I", pixels.nbytes))
    rng = random.Random(se["rng_seed"] + 1)
    z0 = rng.uniform(-350, -50)
    written = []
    order = None
    for i in range(se["instance_count"]):
        sop = uid(rng)
        meta.MediaStorageSOPInstanceUID = sop
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = str(i + 1)
        t0 = study["time"]
        secs = int(t0[:2]) * 3600 + int(t0[2:4]) * 60 + int(t0[4:6]) + i // 2
        ds.ContentTime = "%02d%02d%02d" % (min(secs // 3600, 23), secs // 60 % 60, secs % 60)
        ds.AcquisitionTime = ds.ContentTime
        if se["modality"] == "CT":
            z = z0 + i * (se["slice_thickness"] or 1.0)
            ds.ImagePositionPatient = [ds_str(-180.0), ds_str(-180.0), ds_str(z)]
            ds.SliceLocation = ds_str(z)
        arr = np.roll(pixels, i, axis=0)
        if se["modality"] != "CT":
            ds.add_new(0x00280106, "US", int(arr.min()))  # SmallestImagePixelValue (PixelRepresentation 0)
        varying = {t: encode_element(ds[t], implicit, encodings) for t in VARYING if t in ds}
        if order is None:
            order = sorted(set(constant) | set(varying))
        mfp = DicomBytesIO()
        mfp.is_little_endian = True
        mfp.is_implicit_VR = False
        write_file_meta_info(mfp, meta, enforce_standard=True)
        name = "1-%03d.dcm" % (i + 1)
        path = os.path.join(sdir, name)
        with open(path, "wb") as f:
            f.write(b"\0" * 128 + b"DICM" + mfp.getvalue())
            f.write(b"".join(constant[t] if t in constant else varying[t] for t in order))
            f.write(pixel_header)
            f.write(arr.tobytes())
        written.append((sop, i + 1, path))
    if se["xml"]:
        with open(os.path.join(sdir, se["xml"]), "w", encoding="utf-8") as f:
            f.write(lidc_xml(study, se, rng))
    return se["uid"], written


def lidc_xml(study, se, rng):
    rois = []
    for k in range(rng.randint(1, 3)):
        rois.append("""    <unblindedReadNodule>
      <noduleID>Nodule %d</noduleID>
      <characteristics><subtlety>%d</subtlety><malignancy>%d</malignancy></characteristics>
      <roi><imageZposition>%s</imageZposition><inclusion>TRUE</inclusion>
        <edgeMap><xCoord>%d</xCoord><yCoord>%d</yCoord></edgeMap></roi>
    </unblindedReadNodule>""" % (k + 1, rng.randint(1, 5), rng.randint(1, 5), ds_str(rng.uniform(-300, -50)),
                                  rng.randint(100, 400), rng.randint(100, 400)))
    return """<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage uid="%s" xmlns="http://www.nih.gov">
  <ResponseHeader>
    <Version>1.8.1</Version>
    <StudyInstanceUID>%s</StudyInstanceUID>
    <SeriesInstanceUid>%s</SeriesInstanceUid>
    <TaskDescription>Second unblinded read</TaskDescription>
  </ResponseHeader>
  <readingSession>
    <annotationVersion>3.12</annotationVersion>
    <servicingRadiologistID>anon</servicingRadiologistID>
%s
  </readingSession>
</LidcReadMessage>
""" % (uid(rng), study["uid"], se["uid"], "\n".join(rois))


# ---------------------------------------------------------------- main

def parse_slices(s):
    try:
        a, b = (int(x) for x in s.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected MIN:MAX")
    if a < 1 or b < a:
        raise argparse.ArgumentTypeError("need 1 <= MIN <= MAX")
    return a, b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--patients", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="32x32 pixel data instead of 512x512")
    ap.add_argument("--files", type=int, help="exact number of DICOM instances to write")
    ap.add_argument("--slices", type=parse_slices, default=(20, 60), help="MIN:MAX slices of a main CT series")
    ap.add_argument("--missing-accession", type=float, default=0.0, help="fraction of studies without accession")
    ap.add_argument("--second-study", type=float, default=0.15,
                    help="fraction of patients with a second (CR/DX) study; LIDC-IDRI: 1,308 studies of 1,010 "
                         "patients, 0.31 with --patients 1010 --seed 1010")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if args.patients is None:
        if args.files is None:
            ap.error("give --patients and/or --files")
        args.patients = max(1, args.files // 45)
    if args.patients < 1:
        ap.error("--patients must be >= 1")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    patients, studies, series = plan_archive(args)
    if args.files is not None:
        rescale_to_files(series, args.files)
    by_study = {s["uid"]: s for s in studies}
    by_pat = {p["patient_id"]: p for p in patients}
    tasks = [(by_study[se["study_uid"]], by_pat[by_study[se["study_uid"]]["patient_id"]], se, out, args.small)
             for se in series]
    # biggest series first keeps the pool busy until the end
    order = sorted(range(len(tasks)), key=lambda i: -series[i]["instance_count"])
    results = {}
    if args.jobs > 1 and len(tasks) > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            for se_uid, written in pool.imap_unordered(write_series, [tasks[i] for i in order]):
                results[se_uid] = written
    else:
        for i in order:
            se_uid, written = write_series(tasks[i])
            results[se_uid] = written

    instances, xml_files = [], []
    for se in series:
        st = by_study[se["study_uid"]]
        for sop, num, path in results[se["uid"]]:
            instances.append({"sop_uid": sop, "series_uid": se["uid"], "study_uid": se["study_uid"],
                              "instance_number": num, "path": path, "relpath": os.path.relpath(path, out)})
        if se["xml"]:
            p = os.path.join(out, st["patient_id"], st["dir"], se["dir"], se["xml"])
            xml_files.append({"path": p, "relpath": os.path.relpath(p, out), "series_uid": se["uid"]})
    manifest = {
        "generator": "gen_archive.py", "version": 1, "seed": args.seed, "small": args.small, "root": out,
        "counts": {"patients": len(patients), "studies": len(studies), "series": len(series),
                   "instances": len(instances), "xml_files": len(xml_files)},
        "patients": patients,
        "studies": [{k: s[k] for k in ("uid", "accession", "patient_id", "date", "time", "modality",
                                       "description", "charset", "series", "dir")} for s in studies],
        "series": [{k: s[k] for k in ("uid", "study_uid", "number", "description", "modality", "body_part",
                                      "slice_thickness", "manufacturer", "model", "kvp", "transfer_syntax",
                                      "instance_count", "dir")} for s in series],
        "instances": instances,
        "xml_files": xml_files,
    }
    tmp = os.path.join(out, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "manifest.json"))
    print("gen_archive: %d patients, %d studies, %d series, %d instances, %d xml files -> %s" %
          (len(patients), len(studies), len(series), len(instances), len(xml_files), out))


if __name__ == "__main__":
    main()
