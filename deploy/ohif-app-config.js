/* metadb's configuration of the OHIF viewer (installed by deploy/install.sh as
 * app-config.js of the @ohif/app build served under /viewer/). One data
 * source: metadb's own DICOMweb on the same origin (QIDO-RS for the lists,
 * WADO-RS metadata and frames for the images). No service worker, no other
 * data source, no configuration from the URL.
 *
 * Token: when the API requires read tokens, OHIF sends the one given as the
 * ?token= query parameter (it drops it from the address bar at once). The
 * dashboard keeps its token in this origin's localStorage ("metadb.token");
 * it is added here, in the browser, before OHIF starts, so the token is never
 * part of a URL sent to the server. */
(function () {
  'use strict';
  var root = window.location.origin + '/dicomweb';
  try {
    var token = window.localStorage.getItem('metadb.token');
    var url = new URL(window.location.href);
    if (token && !url.searchParams.has('token') && /^\/viewer\/[^/]+/.test(url.pathname)) {
      url.searchParams.set('token', token);
      window.history.replaceState(null, '', url.toString());
    }
  } catch (e) {
    /* no storage (private mode): OHIF asks the server without a token */
  }
  window.config = {
    name: 'metadb',
    routerBasename: '/viewer',
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    groupEnabledModesFirst: true,
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
    showErrorDetails: 'always',
    investigationalUseDialog: { option: 'never' },
    defaultDataSourceName: 'metadb',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'metadb',
        configuration: {
          friendlyName: 'metadb',
          name: 'metadb',
          qidoRoot: root,
          wadoRoot: root,
          wadoUriRoot: root,
          qidoSupportsIncludeField: true,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
    httpErrorHandler: function (error) {
      console.warn('metadb viewer: request failed', error && error.status);
    },
  };
})();
