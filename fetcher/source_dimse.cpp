/* source_dimse: a PACS over DIMSE, with DCMTK's dcmnet (GDCM's network module
 * as packaged in Debian 12 aborts on its first association: "ProtocolStream
 * as nullptr is invalid").
 *
 * echo = C-ECHO; find_studies = STUDY-level C-FIND (Study Root);
 * list_instances = SERIES-level then IMAGE-level C-FIND per series; retrieve =
 * C-MOVE to our own AE title, whose C-STORE sub-operations arrive at a storage
 * SCP this module runs on cfg->scp_port (one per port per process, a DCMTK
 * thread pool, started at the first retrieval and kept). Each received
 * dataset is written exactly as received (Part 10, DCMTK's meta header) to a
 * temp file in the spool directory and routed by its StudyInstanceUID to the
 * retrieval waiting for that study, whose sink lands it; the C-STORE response
 * is success only if the sink landed it. The fetcher never runs two
 * retrievals of one study at once, so the route is unique; a dataset of a
 * study nobody waits for is refused (0xA700). Every entry point catches C++
 * exceptions; no C++ type crosses source.h. */
#include "source.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scppool.h>
#include <dcmtk/dcmnet/scu.h>
#include <dcmtk/oflog/oflog.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace
{

/* ---- errors ---- */

void set_err(mdb_error_t *err, int code, const char *what, const OFCondition &c)
{
    mdb_error_set(err, MDB_ERR_IO, code, "%s: %s", what, c.text());
}

/* Association set-up failures: a rejection is REFUSED, anything else
 * (connection refused, timeout, reset) NETWORK. */
int assoc_errc(const OFCondition &c)
{
    if (c == DUL_ASSOCIATIONREJECTED || c == NET_EC_NoAcceptablePresentationContexts)
        return MDB_SOURCE_E_REFUSED;
    return MDB_SOURCE_E_NETWORK;
}

/* DIMSE statuses that mean "busy, try later" (out of resources). */
bool status_busy(Uint16 s)
{
    return s == 0xA700 || s == 0xA701 || s == 0xA702;
}

void quiet_dcmtk_once()
{
    static std::once_flag once;
    std::call_once(once, [] { OFLog::configure(OFLogger::FATAL_LOG_LEVEL); });
}

/* ---- routing of received instances to the retrieval waiting for them ---- */

struct route {
    std::mutex busy; /* held while the sink runs; unregistering waits for it */
    const mdb_source_config_t *cfg = nullptr;
    const mdb_source_retrieve_t *req = nullptr;
    mdb_source_sink_fn sink = nullptr;
    void *ctx = nullptr;
    mdb_source_counts_t *counts = nullptr;
    mdb_error_t fatal{}; /* first MDB_SOURCE_E_SINK error */
    bool stopped = false;
};

std::mutex g_routes_mu;
std::map<std::string, std::shared_ptr<route>> g_routes; /* StudyInstanceUID -> route */
std::string g_spool;                                    /* where the SCP writes temp files */

std::shared_ptr<route> route_find(const std::string &study)
{
    std::lock_guard<std::mutex> lk(g_routes_mu);
    auto it = g_routes.find(study);
    return it == g_routes.end() ? nullptr : it->second;
}

/* Hand one received temp file to its route; returns the C-STORE status. */
Uint16 route_deliver(const std::string &tmp, const char *sop_hint)
{
    DcmFileFormat ff;
    OFString study, sop;
    if (ff.loadFile(tmp.c_str(), EXS_Unknown, EGL_noChange, 256).bad() ||
        ff.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study).bad())
        return 0xC000; /* cannot understand */
    ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop);
    std::shared_ptr<route> r = route_find(study.c_str());
    if (!r)
        return 0xA700;
    std::lock_guard<std::mutex> lk(r->busy);
    if (r->stopped)
        return 0xA700;
    r->counts->received++;
    off_t size = 0;
    {
        FILE *f = fopen(tmp.c_str(), "rb");
        if (f) {
            fseeko(f, 0, SEEK_END);
            size = ftello(f);
            fclose(f);
        }
    }
    r->counts->bytes += (uint64_t)(size > 0 ? size : 0);
    const char *uid = sop.empty() ? sop_hint : sop.c_str();
    if (mdb_source_test_should_drop(r->cfg, r->req, uid)) {
        r->counts->dropped++;
        return 0x0000; /* a silent loss, on purpose (test switch) */
    }
    mdb_source_item_t item{};
    item.path = tmp.c_str();
    item.sop_uid = uid;
    mdb_error_t e{};
    if (r->sink(r->ctx, &item, &e)) {
        r->counts->landed++;
        return 0x0000;
    }
    if (e.code == MDB_SOURCE_E_SINK && r->fatal.code == 0)
        r->fatal = e;
    return 0xA700;
}

/* ---- the storage SCP ---- */

class StoreWorker : public DcmThreadSCP
{
  protected:
    OFCondition handleIncomingCommand(T_DIMSE_Message *msg, const DcmPresentationContextInfo &info) override
    {
        if (msg->CommandField != DIMSE_C_STORE_RQ)
            return DcmThreadSCP::handleIncomingCommand(msg, info);
        T_DIMSE_C_StoreRQ &req = msg->msg.CStoreRQ;
        std::string tmp = g_spool + "/.dimse-XXXXXX";
        int fd = mkstemp(&tmp[0]);
        if (fd < 0) {
            DcmDataset *ds = nullptr;
            receiveSTORERequest(req, info.presentationContextID, ds);
            delete ds;
            return sendSTOREResponse(info.presentationContextID, req, 0xA700);
        }
        close(fd);
        OFCondition c = receiveSTORERequest(req, info.presentationContextID, OFString(tmp.c_str()));
        Uint16 status = c.good() ? route_deliver(tmp, req.AffectedSOPInstanceUID) : 0xA700;
        unlink(tmp.c_str()); /* gone already if the sink renamed it */
        if (c.bad())
            return c;
        return sendSTOREResponse(info.presentationContextID, req, status);
    }
};

struct scp_server {
    DcmSCPPool<StoreWorker> pool;
    std::thread thread;
    volatile bool stop = false;
};

std::mutex g_scp_mu;
std::map<int, scp_server *> g_scps; /* port -> running SCP (kept for the process lifetime) */

void add_storage_contexts(DcmSCPConfig &cfg)
{
    /* The stored syntaxes first, so a peer proposing its own (compressed)
     * syntax sends the object unchanged. */
    static const char *const xfers[] = {UID_LittleEndianExplicitTransferSyntax,
                                        UID_LittleEndianImplicitTransferSyntax,
                                        UID_BigEndianExplicitTransferSyntax,
                                        UID_DeflatedExplicitVRLittleEndianTransferSyntax,
                                        UID_JPEGProcess1TransferSyntax,
                                        UID_JPEGProcess2_4TransferSyntax,
                                        UID_JPEGProcess14SV1TransferSyntax,
                                        UID_JPEGProcess14TransferSyntax,
                                        UID_JPEGLSLosslessTransferSyntax,
                                        UID_JPEGLSLossyTransferSyntax,
                                        UID_JPEG2000LosslessOnlyTransferSyntax,
                                        UID_JPEG2000TransferSyntax,
                                        UID_RLELosslessTransferSyntax,
                                        UID_MPEG2MainProfileAtMainLevelTransferSyntax,
                                        UID_MPEG4HighProfileLevel4_1TransferSyntax};
    OFList<OFString> ts;
    for (const char *x : xfers)
        ts.push_back(x);
    for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; i++)
        cfg.addPresentationContext(dcmAllStorageSOPClassUIDs[i], ts);
    OFList<OFString> echo_ts;
    echo_ts.push_back(UID_LittleEndianImplicitTransferSyntax);
    echo_ts.push_back(UID_LittleEndianExplicitTransferSyntax);
    cfg.addPresentationContext(UID_VerificationSOPClass, echo_ts);
}

/* Start (once per port) the storage SCP; false + err if the port cannot be bound. */
bool scp_ensure(const mdb_source_config_t *cfg, const std::string &spool, mdb_error_t *err)
{
    std::lock_guard<std::mutex> lk(g_scp_mu);
    if (g_scps.count(cfg->scp_port))
        return true;
    if (g_spool.empty())
        g_spool = spool;
    auto *s = new scp_server();
    DcmSCPConfig &c = s->pool.getConfig();
    c.setPort((Uint16)cfg->scp_port);
    c.setAETitle(cfg->calling_ae);
    c.setRespondWithCalledAETitle(OFTrue);
    c.setConnectionBlockingMode(DUL_NOBLOCK);
    c.setConnectionTimeout(1);
    c.setACSETimeout((Uint32)cfg->timeout_s);
    c.setDIMSETimeout((Uint32)cfg->timeout_s);
    c.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    c.setHostLookupEnabled(OFFalse);
    add_storage_contexts(c);
    s->pool.setMaxThreads(16);
    /* Bind now, in this thread, to report a busy port as an error: a probe
     * socket on the same port (SO_REUSEADDR like DCMTK) tells whether it is free. */
    T_ASC_Network *probe = nullptr;
    OFCondition pc = ASC_initializeNetwork(NET_ACCEPTOR, cfg->scp_port, 1, &probe);
    if (pc.bad()) {
        /* retried with backoff like a network failure: a port taken for a
         * moment (an outgoing connection's ephemeral port, a process going
         * away) frees itself; one held for good fails after pacs retries */
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_NETWORK, "storage SCP port %d: %s", cfg->scp_port, pc.text());
        delete s;
        return false;
    }
    ASC_dropNetwork(&probe);
    scp_server *sp = s;
    s->thread = std::thread([sp] {
        while (!sp->stop) {
            OFCondition r = sp->pool.listen(); /* returns on the 1 s connection timeout */
            if (r.bad() && r != DUL_NOASSOCIATIONREQUEST)
                usleep(200 * 1000);
        }
    });
    s->thread.detach(); /* lives as long as the process */
    g_scps[cfg->scp_port] = s;
    return true;
}

/* ---- the SCU side ---- */

struct dimse_state {
    mdb_source_config_t cfg;
    std::string spool;
};

bool scu_connect(dimse_state *st, DcmSCU &scu, const std::vector<const char *> &abstracts, mdb_error_t *err)
{
    quiet_dcmtk_once();
    scu.setAETitle(st->cfg.calling_ae);
    scu.setPeerHostName(st->cfg.host);
    scu.setPeerPort((Uint16)st->cfg.port);
    scu.setPeerAETitle(st->cfg.called_ae);
    scu.setACSETimeout((Uint32)st->cfg.timeout_s);
    scu.setDIMSETimeout((Uint32)st->cfg.timeout_s);
    scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    scu.setConnectionTimeout(st->cfg.timeout_s);
    scu.setMaxReceivePDULength(65536);
    OFList<OFString> ts;
    ts.push_back(UID_LittleEndianExplicitTransferSyntax);
    ts.push_back(UID_LittleEndianImplicitTransferSyntax);
    for (const char *a : abstracts)
        scu.addPresentationContext(a, ts);
    OFCondition c = scu.initNetwork();
    if (c.bad()) {
        set_err(err, MDB_SOURCE_E_NETWORK, "network init", c);
        return false;
    }
    c = scu.negotiateAssociation();
    if (c.bad()) {
        char what[512];
        snprintf(what, sizeof what, "association with %s@%s:%d", st->cfg.called_ae, st->cfg.host, st->cfg.port);
        set_err(err, assoc_errc(c), what, c);
        return false;
    }
    return true;
}

void scu_close(DcmSCU &scu, bool ok)
{
    if (!scu.isConnected())
        return;
    if (ok)
        scu.releaseAssociation();
    else
        scu.abortAssociation();
}

T_ASC_PresentationContextID pres_id(DcmSCU &scu, const char *abstract, mdb_error_t *err)
{
    T_ASC_PresentationContextID id = scu.findPresentationContextID(abstract, "");
    if (id == 0)
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_REFUSED, "the peer accepted no context for %s",
                      dcmFindNameOfUID(abstract, abstract));
    return id;
}

void copy_field(char *dst, size_t cap, DcmDataset *ds, const DcmTagKey &tag, bool all_values = false)
{
    OFString v;
    dst[0] = '\0';
    if (!ds)
        return;
    if (all_values ? ds->findAndGetOFStringArray(tag, v).bad() : ds->findAndGetOFString(tag, v).bad())
        return;
    snprintf(dst, cap, "%s", v.c_str());
}

/* Run one C-FIND on an open association; fn(dataset) per match. */
template <typename Fn>
bool run_find(DcmSCU &scu, T_ASC_PresentationContextID id, DcmDataset &keys, Fn fn, mdb_error_t *err)
{
    OFList<QRResponse *> rsp;
    OFCondition c = scu.sendFINDRequest(id, &keys, &rsp);
    bool ok = c.good();
    Uint16 final_status = 0;
    for (QRResponse *r : rsp) {
        if (ok && r->m_dataset && (r->m_status == 0xFF00 || r->m_status == 0xFF01))
            ok = fn(r->m_dataset);
        final_status = r->m_status;
        delete r;
    }
    if (c.bad()) {
        set_err(err, MDB_SOURCE_E_NETWORK, "C-FIND", c);
        return false;
    }
    if (final_status != 0x0000) {
        mdb_error_set(err, MDB_ERR_IO, status_busy(final_status) ? MDB_SOURCE_E_REFUSED : MDB_SOURCE_E_PROTOCOL,
                      "C-FIND ended with status 0x%04x", final_status);
        return false;
    }
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
    return ok;
}

/* ---- the vtable ---- */

bool d_open(const mdb_source_config_t *cfg, const char *spool_dir, void **state, mdb_error_t *err)
{
    try {
        auto *st = new dimse_state();
        st->cfg = *cfg;
        st->spool = spool_dir ? spool_dir : "/tmp";
        *state = st;
        return true;
    } catch (const std::exception &e) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "dimse open: %s", e.what());
        return false;
    }
}

void d_close(void *state)
{
    delete static_cast<dimse_state *>(state);
}

bool d_echo(void *state, mdb_error_t *err)
{
    try {
        auto *st = static_cast<dimse_state *>(state);
        DcmSCU scu;
        if (!scu_connect(st, scu, {UID_VerificationSOPClass}, err))
            return false;
        OFCondition c = scu.sendECHORequest(0);
        scu_close(scu, c.good());
        if (c.bad()) {
            set_err(err, MDB_SOURCE_E_NETWORK, "C-ECHO", c);
            return false;
        }
        return true;
    } catch (const std::exception &e) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "C-ECHO: %s", e.what());
        return false;
    }
}

bool d_find_studies(void *state, const mdb_source_selector_t *sel, mdb_source_studies_t *out, mdb_error_t *err)
{
    try {
        auto *st = static_cast<dimse_state *>(state);
        DcmDataset keys;
        keys.putAndInsertString(DCM_QueryRetrieveLevel, "STUDY");
        keys.putAndInsertString(DCM_StudyInstanceUID, sel->study_uid ? sel->study_uid : "");
        keys.putAndInsertString(DCM_AccessionNumber, sel->accession ? sel->accession : "");
        keys.putAndInsertString(DCM_PatientID, sel->patient_id && strcmp(sel->patient_id, "*") ? sel->patient_id : "");
        std::string range;
        if ((sel->date_from && *sel->date_from) || (sel->date_to && *sel->date_to))
            range = std::string(sel->date_from ? sel->date_from : "") + "-" + (sel->date_to ? sel->date_to : "");
        keys.putAndInsertString(DCM_StudyDate, range.c_str());
        keys.putAndInsertString(DCM_ModalitiesInStudy, "");
        keys.putAndInsertString(DCM_StudyDescription, "");
        keys.putAndInsertString(DCM_NumberOfStudyRelatedSeries, "");
        keys.putAndInsertString(DCM_NumberOfStudyRelatedInstances, "");
        DcmSCU scu;
        if (!scu_connect(st, scu, {UID_FINDStudyRootQueryRetrieveInformationModel}, err))
            return false;
        T_ASC_PresentationContextID id = pres_id(scu, UID_FINDStudyRootQueryRetrieveInformationModel, err);
        bool ok = id != 0 &&
                  run_find(
                      scu, id, keys,
                      [out](DcmDataset *ds) {
                          mdb_source_study_t s{};
                          copy_field(s.study_uid, sizeof s.study_uid, ds, DCM_StudyInstanceUID);
                          copy_field(s.accession, sizeof s.accession, ds, DCM_AccessionNumber);
                          copy_field(s.patient_id, sizeof s.patient_id, ds, DCM_PatientID);
                          copy_field(s.date, sizeof s.date, ds, DCM_StudyDate);
                          copy_field(s.description, sizeof s.description, ds, DCM_StudyDescription);
                          copy_field(s.modalities, sizeof s.modalities, ds, DCM_ModalitiesInStudy, true);
                          for (char *p = s.modalities; *p; p++)
                              if (*p == '\\')
                                  *p = ',';
                          Sint32 n = -1;
                          s.n_series = ds->findAndGetSint32(DCM_NumberOfStudyRelatedSeries, n).good() ? n : -1;
                          n = -1;
                          s.n_instances = ds->findAndGetSint32(DCM_NumberOfStudyRelatedInstances, n).good() ? n : -1;
                          if (!s.study_uid[0])
                              return true; /* a match without its unique key: ignore */
                          return mdb_source_studies_push(out, &s);
                      },
                      err);
        scu_close(scu, ok);
        return ok;
    } catch (const std::exception &e) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "C-FIND: %s", e.what());
        return false;
    }
}

bool d_list_instances(void *state, const char *study_uid, mdb_source_instances_t *out, mdb_error_t *err)
{
    try {
        auto *st = static_cast<dimse_state *>(state);
        DcmSCU scu;
        if (!scu_connect(st, scu, {UID_FINDStudyRootQueryRetrieveInformationModel}, err))
            return false;
        T_ASC_PresentationContextID id = pres_id(scu, UID_FINDStudyRootQueryRetrieveInformationModel, err);
        std::vector<std::string> series;
        DcmDataset skeys;
        skeys.putAndInsertString(DCM_QueryRetrieveLevel, "SERIES");
        skeys.putAndInsertString(DCM_StudyInstanceUID, study_uid);
        skeys.putAndInsertString(DCM_SeriesInstanceUID, "");
        bool ok = id != 0 && run_find(
                                 scu, id, skeys,
                                 [&series](DcmDataset *ds) {
                                     OFString v;
                                     if (ds->findAndGetOFString(DCM_SeriesInstanceUID, v).good() && !v.empty())
                                         series.push_back(v.c_str());
                                     return true;
                                 },
                                 err);
        for (size_t i = 0; ok && i < series.size(); i++) {
            DcmDataset ikeys;
            ikeys.putAndInsertString(DCM_QueryRetrieveLevel, "IMAGE");
            ikeys.putAndInsertString(DCM_StudyInstanceUID, study_uid);
            ikeys.putAndInsertString(DCM_SeriesInstanceUID, series[i].c_str());
            ikeys.putAndInsertString(DCM_SOPInstanceUID, "");
            const std::string &se = series[i];
            ok = run_find(
                scu, id, ikeys,
                [out, &se](DcmDataset *ds) {
                    mdb_source_instance_t in{};
                    copy_field(in.sop_uid, sizeof in.sop_uid, ds, DCM_SOPInstanceUID);
                    snprintf(in.series_uid, sizeof in.series_uid, "%s", se.c_str());
                    return !in.sop_uid[0] || mdb_source_instances_push(out, &in);
                },
                err);
        }
        scu_close(scu, ok);
        return ok;
    } catch (const std::exception &e) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "C-FIND: %s", e.what());
        return false;
    }
}

bool move_once(dimse_state *st, DcmSCU &scu, T_ASC_PresentationContextID id, DcmDataset &keys,
               mdb_source_counts_t *counts, mdb_error_t *err)
{
    OFList<RetrieveResponse *> rsp;
    OFCondition c = scu.sendMOVERequest(id, st->cfg.calling_ae, &keys, &rsp);
    Uint16 status = 0xFFFF;
    for (RetrieveResponse *r : rsp) {
        status = r->m_status;
        if (r->m_status != 0xFF00) { /* the final response carries the counts */
            counts->completed = (counts->completed < 0 ? 0 : counts->completed) + r->m_numberOfCompletedSubops;
            counts->failed = (counts->failed < 0 ? 0 : counts->failed) + r->m_numberOfFailedSubops;
            counts->warning = (counts->warning < 0 ? 0 : counts->warning) + r->m_numberOfWarningSubops;
        }
        delete r;
    }
    if (c.bad()) {
        set_err(err, MDB_SOURCE_E_NETWORK, "C-MOVE", c);
        return false;
    }
    /* 0x0000 success, 0xB000 some sub-operations failed: the exchange completed
     * (the fetcher checks what landed); 0xA801 the PACS does not know our AE. */
    if (status == 0x0000 || status == 0xB000)
        return true;
    if (status == 0xA801)
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_CONFIG,
                      "C-MOVE refused: the PACS does not know move destination %s (status 0xA801)", st->cfg.calling_ae);
    else
        mdb_error_set(err, MDB_ERR_IO, status_busy(status) ? MDB_SOURCE_E_REFUSED : MDB_SOURCE_E_PROTOCOL,
                      "C-MOVE ended with status 0x%04x", status);
    return false;
}

/* ---- C-GET: the C-STOREs come back on our own association ---- */

class GetSCU : public DcmSCU
{
  public:
    const mdb_source_config_t *cfg = nullptr;
    const mdb_source_retrieve_t *req = nullptr;
    mdb_source_sink_fn sink = nullptr;
    void *ctx = nullptr;
    mdb_source_counts_t *counts = nullptr;
    std::string spool;
    mdb_error_t fatal{};

  protected:
    /* The data set arrives in memory; it is written as a Part 10 file in its
     * transfer syntax (the meta header is ours) and handed to the sink. */
    OFCondition handleSTORERequest(const T_ASC_PresentationContextID presID, DcmDataset *ds, OFBool &cont,
                                   Uint16 &status) override
    {
        (void)presID;
        cont = OFTrue;
        status = 0xA700;
        if (!ds)
            return EC_IllegalParameter;
        std::unique_ptr<DcmDataset> own(ds);
        OFString sop;
        ds->findAndGetOFString(DCM_SOPInstanceUID, sop);
        counts->received++;
        if (mdb_source_test_should_drop(cfg, req, sop.c_str())) {
            counts->dropped++;
            status = 0x0000;
            return EC_Normal;
        }
        std::string tmp = spool + "/.dimse-XXXXXX";
        int fd = mkstemp(&tmp[0]);
        if (fd < 0)
            return EC_Normal;
        close(fd);
        DcmFileFormat ff(ds);
        E_TransferSyntax xfer = ds->getOriginalXfer();
        if (ff.saveFile(tmp.c_str(), xfer == EXS_Unknown ? EXS_LittleEndianExplicit : xfer).good()) {
            FILE *f = fopen(tmp.c_str(), "rb");
            if (f) {
                fseeko(f, 0, SEEK_END);
                counts->bytes += (uint64_t)ftello(f);
                fclose(f);
            }
            mdb_source_item_t item{};
            item.path = tmp.c_str();
            item.sop_uid = sop.c_str();
            mdb_error_t e{};
            if (sink(ctx, &item, &e)) {
                counts->landed++;
                status = 0x0000;
            } else if (e.code == MDB_SOURCE_E_SINK && fatal.code == 0) {
                fatal = e;
                cont = OFFalse;
            }
        }
        unlink(tmp.c_str());
        return EC_Normal;
    }
};

bool get_once(GetSCU &scu, T_ASC_PresentationContextID id, DcmDataset &keys, mdb_source_counts_t *counts,
              mdb_error_t *err)
{
    OFList<RetrieveResponse *> rsp;
    OFCondition c = scu.sendCGETRequest(id, &keys, &rsp);
    Uint16 status = 0xFFFF;
    for (RetrieveResponse *r : rsp) {
        status = r->m_status;
        if (r->m_status != 0xFF00) {
            counts->completed = (counts->completed < 0 ? 0 : counts->completed) + r->m_numberOfCompletedSubops;
            counts->failed = (counts->failed < 0 ? 0 : counts->failed) + r->m_numberOfFailedSubops;
            counts->warning = (counts->warning < 0 ? 0 : counts->warning) + r->m_numberOfWarningSubops;
        }
        delete r;
    }
    if (c.bad()) {
        set_err(err, MDB_SOURCE_E_NETWORK, "C-GET", c);
        return false;
    }
    if (status == 0x0000 || status == 0xB000)
        return true;
    mdb_error_set(err, MDB_ERR_IO, status_busy(status) ? MDB_SOURCE_E_REFUSED : MDB_SOURCE_E_PROTOCOL,
                  "C-GET ended with status 0x%04x", status);
    return false;
}

void retrieve_keys(DcmDataset &keys, const mdb_source_retrieve_t *req, const char *sop)
{
    bool series_level = req->series_uid && *req->series_uid;
    keys.putAndInsertString(DCM_QueryRetrieveLevel, sop ? "IMAGE" : series_level ? "SERIES" : "STUDY");
    keys.putAndInsertString(DCM_StudyInstanceUID, req->study_uid);
    if (series_level)
        keys.putAndInsertString(DCM_SeriesInstanceUID, req->series_uid);
    if (sop)
        keys.putAndInsertString(DCM_SOPInstanceUID, sop);
}

bool d_retrieve_get(dimse_state *st, const mdb_source_retrieve_t *req, mdb_source_sink_fn sink, void *sink_ctx,
                    mdb_source_counts_t *counts, mdb_error_t *err)
{
    GetSCU scu;
    scu.cfg = &st->cfg;
    scu.req = req;
    scu.sink = sink;
    scu.ctx = sink_ctx;
    scu.counts = counts;
    scu.spool = st->spool;
    scu.setStorageMode(DCMSCU_STORAGE_DISK); /* handleSTORERequest gets each data set */
    /* The storage classes we accept as SCP on this association (at most 128
     * contexts per association: DCMTK's long list of common classes). */
    OFList<OFString> ts;
    ts.push_back(UID_LittleEndianExplicitTransferSyntax);
    ts.push_back(UID_LittleEndianImplicitTransferSyntax);
    for (int i = 0; i < numberOfDcmLongSCUStorageSOPClassUIDs && i < 120; i++)
        scu.addPresentationContext(dcmLongSCUStorageSOPClassUIDs[i], ts, ASC_SC_ROLE_SCP);
    if (!scu_connect(st, scu, {UID_GETStudyRootQueryRetrieveInformationModel}, err))
        return false;
    T_ASC_PresentationContextID id = pres_id(scu, UID_GETStudyRootQueryRetrieveInformationModel, err);
    bool ok = id != 0;
    if (ok && req->n_sop_uids > 0 && req->series_uid && *req->series_uid) {
        for (size_t i = 0; ok && i < req->n_sop_uids; i++) {
            DcmDataset keys;
            retrieve_keys(keys, req, req->sop_uids[i]);
            ok = get_once(scu, id, keys, counts, err);
        }
    } else if (ok) {
        DcmDataset keys;
        retrieve_keys(keys, req, nullptr);
        ok = get_once(scu, id, keys, counts, err);
    }
    scu_close(scu, ok);
    if (ok && scu.fatal.code != 0) {
        *err = scu.fatal;
        ok = false;
    }
    return ok;
}

bool d_retrieve(void *state, const mdb_source_retrieve_t *req, mdb_source_sink_fn sink, void *sink_ctx,
                mdb_source_counts_t *counts, mdb_error_t *err)
{
    if (static_cast<dimse_state *>(state)->cfg.dimse_cget) {
        try {
            if (!req->study_uid || !*req->study_uid) {
                mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_CONFIG, "retrieve without a study UID");
                return false;
            }
            return d_retrieve_get(static_cast<dimse_state *>(state), req, sink, sink_ctx, counts, err);
        } catch (const std::exception &e) {
            mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "C-GET: %s", e.what());
            return false;
        }
    }
    std::string study;
    try {
        auto *st = static_cast<dimse_state *>(state);
        if (!req->study_uid || !*req->study_uid) {
            mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_CONFIG, "retrieve without a study UID");
            return false;
        }
        study = req->study_uid;
        if (!scp_ensure(&st->cfg, st->spool, err))
            return false;
        auto r = std::make_shared<route>();
        r->cfg = &st->cfg;
        r->req = req;
        r->sink = sink;
        r->ctx = sink_ctx;
        r->counts = counts;
        {
            std::lock_guard<std::mutex> lk(g_routes_mu);
            if (g_routes.count(study)) {
                mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_REFUSED, "study %s is being retrieved already",
                              study.c_str());
                return false;
            }
            g_routes[study] = r;
        }
        bool ok = false;
        DcmSCU scu;
        if (scu_connect(st, scu, {UID_MOVEStudyRootQueryRetrieveInformationModel}, err)) {
            T_ASC_PresentationContextID id = pres_id(scu, UID_MOVEStudyRootQueryRetrieveInformationModel, err);
            ok = id != 0;
            bool series_level = req->series_uid && *req->series_uid;
            if (ok && req->n_sop_uids > 0 && series_level) {
                /* instance level, one C-MOVE per instance (multi-valued
                 * SOPInstanceUID is not accepted by every PACS) */
                for (size_t i = 0; ok && i < req->n_sop_uids; i++) {
                    DcmDataset keys;
                    keys.putAndInsertString(DCM_QueryRetrieveLevel, "IMAGE");
                    keys.putAndInsertString(DCM_StudyInstanceUID, req->study_uid);
                    keys.putAndInsertString(DCM_SeriesInstanceUID, req->series_uid);
                    keys.putAndInsertString(DCM_SOPInstanceUID, req->sop_uids[i]);
                    ok = move_once(st, scu, id, keys, counts, err);
                }
            } else if (ok) {
                DcmDataset keys;
                keys.putAndInsertString(DCM_QueryRetrieveLevel, series_level ? "SERIES" : "STUDY");
                keys.putAndInsertString(DCM_StudyInstanceUID, req->study_uid);
                if (series_level)
                    keys.putAndInsertString(DCM_SeriesInstanceUID, req->series_uid);
                ok = move_once(st, scu, id, keys, counts, err);
            }
            scu_close(scu, ok);
        }
        {
            std::lock_guard<std::mutex> lk(g_routes_mu);
            g_routes.erase(study);
        }
        {
            std::lock_guard<std::mutex> lk(r->busy); /* wait for a sink still running */
            r->stopped = true;
        }
        if (ok && r->fatal.code != 0) {
            *err = r->fatal;
            ok = false;
        }
        return ok;
    } catch (const std::exception &e) {
        std::lock_guard<std::mutex> lk(g_routes_mu);
        g_routes.erase(study);
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "C-MOVE: %s", e.what());
        return false;
    }
}

} /* namespace */

extern "C" const mdb_source_ops_t mdb_source_dimse_ops = {
    "dimse", d_open, d_close, d_echo, d_find_studies, d_list_instances, d_retrieve,
};
