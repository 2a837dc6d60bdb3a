/* render.cpp: decoding one frame of an archive file's pixel data with GDCM,
 * for WADO-RS rendered / thumbnail / frames (see wado.h).
 *
 * GDCM's ImageReader reads the file from the caller's descriptor (which
 * went through the archive gate) and its codecs decode whatever transfer
 * syntax the file uses: native, RLE, JPEG baseline / extended / lossless,
 * JPEG-LS, JPEG 2000. What comes out is turned into modality values: the
 * stored value's unused high bits masked off (sign-extended for signed
 * pixels), then RescaleSlope / RescaleIntercept from the file (1 and 0 when
 * absent, as pydicom's apply_modality_lut). Colour images become
 * interleaved 8-bit RGB (planar configuration and YBR_FULL undone).
 *
 * Every entry point is extern "C" and catches C++ exceptions (GDCM throws on
 * some malformed files, std::bad_alloc on absurd declared lengths): they
 * become an mdb_error_t, never a crash. */
#include <errno.h>
#include <ext/stdio_filebuf.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gdcmDataSet.h>
#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmPhotometricInterpretation.h>
#include <gdcmPixelFormat.h>
#include <gdcmTrace.h>

#include <istream>
#include <new>
#include <string>
#include <vector>

#include "mdb_dicom.h"
#include "wado.h"

namespace
{

/* The text value (component idx of a backslash list) of a top-level
 * element; "" when absent. */
std::string text_value(const gdcm::DataSet &ds, uint16_t g, uint16_t e, int idx)
{
    const gdcm::Tag t(g, e);
    if (!ds.FindDataElement(t))
        return "";
    const gdcm::DataElement &de = ds.GetDataElement(t);
    const gdcm::ByteValue *bv = de.GetByteValue();
    if (!bv || !bv->GetPointer())
        return "";
    std::string s(bv->GetPointer(), bv->GetLength());
    size_t start = 0;
    for (int i = 0; i < idx; i++) {
        size_t p = s.find('\\', start);
        if (p == std::string::npos)
            return "";
        start = p + 1;
    }
    size_t end = s.find('\\', start);
    std::string v = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
    size_t a = v.find_first_not_of(" \t\r\n");
    size_t b = v.find_last_not_of(" \t\r\n");
    if (a == std::string::npos)
        return "";
    return v.substr(a, b - a + 1);
}

bool number_value(const gdcm::DataSet &ds, uint16_t g, uint16_t e, double *out)
{
    std::string s = text_value(ds, g, e, 0);
    if (s.empty())
        return false;
    char *end = nullptr;
    double v = strtod(s.c_str(), &end);
    if (end == s.c_str() || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* Read the image from fd (offset 0). The descriptor is duplicated: the
 * stream owns and closes its copy. */
bool read_image(int fd, gdcm::ImageReader &reader, mdb_error_t *err)
{
    int dupfd = dup(fd);
    if (dupfd < 0) {
        mdb_error_set(err, MDB_ERR_IO, errno, "dup: %s", strerror(errno));
        return false;
    }
    if (lseek(dupfd, 0, SEEK_SET) < 0) {
        int e = errno;
        close(dupfd);
        mdb_error_set(err, MDB_ERR_IO, e, "lseek: %s", strerror(e));
        return false;
    }
    __gnu_cxx::stdio_filebuf<char> fb(dupfd, std::ios::in);
    std::istream is(&fb);
    reader.SetStream(is);
    if (!reader.Read()) {
        mdb_error_set(
            err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED,
            "GDCM cannot read an image from this file (no pixel data, or a transfer syntax it cannot decode)");
        return false;
    }
    return true;
}

int frame_count(const gdcm::Image &img)
{
    return img.GetNumberOfDimensions() >= 3 ? (int)img.GetDimension(2) : 1;
}

/* The whole decoded buffer (all frames). */
bool decode_buffer(const gdcm::Image &img, std::vector<char> &buf, mdb_error_t *err)
{
    unsigned long len = img.GetBufferLength();
    if (len == 0 || len > (1ul << 31)) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "pixel data of %lu bytes is not decoded here", len);
        return false;
    }
    buf.resize(len);
    if (!img.GetBuffer(buf.data())) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "GDCM could not decode the pixel data");
        return false;
    }
    return true;
}

/* Stored value i of a frame as a number: unused high bits masked off,
 * sign-extended when signed. */
double stored_value(const char *p, size_t i, gdcm::PixelFormat::ScalarType st, int stored, bool is_signed)
{
    uint64_t u;
    switch (st) {
    case gdcm::PixelFormat::UINT8:
    case gdcm::PixelFormat::INT8: u = ((const uint8_t *)p)[i]; break;
    case gdcm::PixelFormat::UINT16:
    case gdcm::PixelFormat::INT16: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        u = v;
        break;
    }
    case gdcm::PixelFormat::UINT32:
    case gdcm::PixelFormat::INT32: {
        uint32_t v;
        memcpy(&v, p + 4 * i, 4);
        u = v;
        break;
    }
    case gdcm::PixelFormat::FLOAT32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case gdcm::PixelFormat::FLOAT64: {
        double d;
        memcpy(&d, p + 8 * i, 8);
        return d;
    }
    case gdcm::PixelFormat::SINGLEBIT: return (((const uint8_t *)p)[i / 8] >> (i % 8)) & 1;
    default: return 0;
    }
    if (stored <= 0 || stored >= 64)
        return (double)u;
    u &= (((uint64_t)1) << stored) - 1;
    if (is_signed && (u >> (stored - 1)) & 1)
        return (double)(int64_t)(u | ~((((uint64_t)1) << stored) - 1));
    return (double)u;
}

size_t sample_bytes(gdcm::PixelFormat::ScalarType st)
{
    switch (st) {
    case gdcm::PixelFormat::UINT8:
    case gdcm::PixelFormat::INT8: return 1;
    case gdcm::PixelFormat::UINT16:
    case gdcm::PixelFormat::INT16: return 2;
    case gdcm::PixelFormat::UINT32:
    case gdcm::PixelFormat::INT32:
    case gdcm::PixelFormat::FLOAT32: return 4;
    case gdcm::PixelFormat::FLOAT64: return 8;
    default: return 0;
    }
}

uint8_t clamp8(double v)
{
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)lrint(v);
}

bool decode_frame(int fd, int frame, wado_pixels_t *out, mdb_error_t *err)
{
    gdcm::ImageReader reader;
    if (!read_image(fd, reader, err))
        return false;
    const gdcm::Image &img = reader.GetImage();
    const gdcm::DataSet &ds = reader.GetFile().GetDataSet();
    int frames = frame_count(img);
    if (frame < 1 || frame > frames) {
        mdb_error_set(err, MDB_ERR_QUERY, ERANGE, "frame %d does not exist (the instance has %d)", frame, frames);
        return false;
    }
    std::vector<char> buf;
    if (!decode_buffer(img, buf, err))
        return false;
    const gdcm::PixelFormat pf = img.GetPixelFormat();
    const gdcm::PixelFormat::ScalarType st = pf.GetScalarType();
    int cols = (int)img.GetDimension(0), rows = (int)img.GetDimension(1);
    int spp = pf.GetSamplesPerPixel();
    size_t n = (size_t)rows * (size_t)cols;
    if (rows <= 0 || cols <= 0 || (spp != 1 && spp != 3)) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "%dx%d image with %d samples per pixel is not rendered",
                      cols, rows, spp);
        return false;
    }
    out->rows = rows;
    out->cols = cols;
    out->frames = frames;
    out->samples = spp;
    gdcm::PhotometricInterpretation pi = img.GetPhotometricInterpretation();
    if (st == gdcm::PixelFormat::SINGLEBIT) {
        size_t need = (n * (size_t)frames + 7) / 8;
        if (buf.size() < need) {
            mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_ETRUNCATED, "decoded pixel data is shorter than the image");
            return false;
        }
        out->grey = (float *)malloc(n * sizeof(float));
        if (!out->grey)
            throw std::bad_alloc();
        size_t base = n * (size_t)(frame - 1);
        for (size_t i = 0; i < n; i++)
            out->grey[i] = (float)((((const uint8_t *)buf.data())[(base + i) / 8] >> ((base + i) % 8)) & 1);
        return true;
    }
    size_t sb = sample_bytes(st);
    size_t frame_bytes = n * (size_t)spp * sb;
    if (sb == 0 || buf.size() < frame_bytes * (size_t)frames) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_ETRUNCATED, "decoded pixel data is shorter than the image");
        return false;
    }
    const char *p = buf.data() + frame_bytes * (size_t)(frame - 1);
    int stored = pf.GetBitsStored();
    bool is_signed = pf.GetPixelRepresentation() == 1;
    if (spp == 3) {
        out->rgb = (uint8_t *)malloc(n * 3);
        if (!out->rgb)
            throw std::bad_alloc();
        bool planar = img.GetPlanarConfiguration() == 1;
        double scale =
            sb == 1 ? 1.0 : 255.0 / (double)((((uint64_t)1) << (stored > 0 && stored < 33 ? stored : 16)) - 1);
        bool ybr =
            pi == gdcm::PhotometricInterpretation::YBR_FULL || pi == gdcm::PhotometricInterpretation::YBR_FULL_422;
        for (size_t i = 0; i < n; i++) {
            double c[3];
            for (int s = 0; s < 3; s++)
                c[s] = stored_value(p, planar ? (size_t)s * n + i : i * 3 + (size_t)s, st, stored, false) * scale;
            if (ybr) {
                double y = c[0], cb = c[1] - 128.0, cr = c[2] - 128.0;
                c[0] = y + 1.402 * cr;
                c[1] = y - 0.344136 * cb - 0.714136 * cr;
                c[2] = y + 1.772 * cb;
            }
            for (int s = 0; s < 3; s++)
                out->rgb[i * 3 + (size_t)s] = clamp8(c[s]);
        }
        return true;
    }
    double slope = 1.0, intercept = 0.0;
    number_value(ds, 0x0028, 0x1053, &slope);
    number_value(ds, 0x0028, 0x1052, &intercept);
    out->grey = (float *)malloc(n * sizeof(float));
    if (!out->grey)
        throw std::bad_alloc();
    for (size_t i = 0; i < n; i++)
        out->grey[i] = (float)(stored_value(p, i, st, stored, is_signed) * slope + intercept);
    out->monochrome1 = pi == gdcm::PhotometricInterpretation::MONOCHROME1;
    double c, w;
    if (number_value(ds, 0x0028, 0x1050, &c) && number_value(ds, 0x0028, 0x1051, &w) && w >= 1.0) {
        out->has_window = true;
        out->center = c;
        out->width = w;
    }
    std::string fn = text_value(ds, 0x0028, 0x1056, 0);
    out->function = fn == "SIGMOID" ? WADO_FN_SIGMOID : fn == "LINEAR_EXACT" ? WADO_FN_LINEAR_EXACT : WADO_FN_LINEAR;
    return true;
}

bool decode_raw(int fd, int frame, uint8_t **data, size_t *len, mdb_error_t *err)
{
    gdcm::ImageReader reader;
    if (!read_image(fd, reader, err))
        return false;
    const gdcm::Image &img = reader.GetImage();
    int frames = frame_count(img);
    if (frame < 1 || frame > frames) {
        mdb_error_set(err, MDB_ERR_QUERY, ERANGE, "frame %d does not exist (the instance has %d)", frame, frames);
        return false;
    }
    std::vector<char> buf;
    if (!decode_buffer(img, buf, err))
        return false;
    size_t fb = buf.size() / (size_t)frames;
    if (img.GetPixelFormat().GetScalarType() == gdcm::PixelFormat::SINGLEBIT && frames > 1) {
        mdb_error_set(err, MDB_ERR_QUERY, ENOTSUP, "frames of multi-frame 1-bit images are not decoded one by one");
        return false;
    }
    *data = (uint8_t *)malloc(fb ? fb : 1);
    if (!*data)
        throw std::bad_alloc();
    memcpy(*data, buf.data() + fb * (size_t)(frame - 1), fb);
    *len = fb;
    return true;
}

} // namespace

extern "C" bool wado_decode_frame(int fd, int frame, wado_pixels_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    try {
        if (decode_frame(fd, frame, out, err))
            return true;
    } catch (const std::bad_alloc &) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory decoding the pixel data");
    } catch (const std::exception &e) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "GDCM: %s", e.what());
    } catch (...) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "GDCM failed on this file");
    }
    wado_pixels_free(out);
    return false;
}

extern "C" bool wado_decode_frame_raw(int fd, int frame, uint8_t **data, size_t *len, mdb_error_t *err)
{
    *data = nullptr;
    *len = 0;
    try {
        return decode_raw(fd, frame, data, len, err);
    } catch (const std::bad_alloc &) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory decoding the pixel data");
    } catch (const std::exception &e) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "GDCM: %s", e.what());
    } catch (...) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "GDCM failed on this file");
    }
    free(*data);
    *data = nullptr;
    return false;
}

extern "C" void wado_quiet_decoder(void)
{
    gdcm::Trace::WarningOff();
    gdcm::Trace::ErrorOff();
    gdcm::Trace::DebugOff();
}

extern "C" void wado_pixels_free(wado_pixels_t *p)
{
    if (!p)
        return;
    free(p->grey);
    free(p->rgb);
    p->grey = nullptr;
    p->rgb = nullptr;
}
