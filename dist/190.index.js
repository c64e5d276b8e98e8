export const id = 190;
export const ids = [190];
export const modules = {

/***/ 9190:
/***/ ((__unused_webpack_module, __webpack_exports__, __webpack_require__) => {

/* harmony export */ __webpack_require__.d(__webpack_exports__, {
/* harmony export */   uploadArtifact: () => (/* binding */ uploadArtifact)
/* harmony export */ });
/* harmony import */ var node_crypto__WEBPACK_IMPORTED_MODULE_0__ = __webpack_require__(77598);
/* harmony import */ var node_crypto__WEBPACK_IMPORTED_MODULE_0___default = /*#__PURE__*/__webpack_require__.n(node_crypto__WEBPACK_IMPORTED_MODULE_0__);
/* harmony import */ var node_fs__WEBPACK_IMPORTED_MODULE_1__ = __webpack_require__(73024);
/* harmony import */ var node_fs__WEBPACK_IMPORTED_MODULE_1___default = /*#__PURE__*/__webpack_require__.n(node_fs__WEBPACK_IMPORTED_MODULE_1__);
/* harmony import */ var node_path__WEBPACK_IMPORTED_MODULE_2__ = __webpack_require__(76760);
/* harmony import */ var node_path__WEBPACK_IMPORTED_MODULE_2___default = /*#__PURE__*/__webpack_require__.n(node_path__WEBPACK_IMPORTED_MODULE_2__);
/* harmony import */ var _actions_artifact__WEBPACK_IMPORTED_MODULE_3__ = __webpack_require__(20584);
/* harmony import */ var _errors_js__WEBPACK_IMPORTED_MODULE_4__ = __webpack_require__(83916);
/* harmony import */ var _log_js__WEBPACK_IMPORTED_MODULE_5__ = __webpack_require__(25625);
/* harmony import */ var _transfer_rename_js__WEBPACK_IMPORTED_MODULE_6__ = __webpack_require__(44877);
/* harmony import */ var _artifact_service_js__WEBPACK_IMPORTED_MODULE_7__ = __webpack_require__(40148);



// A namespace import, and errors told apart by name: a stand-in for the package (such as
// @github/local-action's) need not export every class this module would name.





/**
 * Uploads `file` as a single un-zipped artifact called `name`. An upload without an archive takes
 * its name from the file, so a different name is given through a hard link in a hidden directory
 * beside the file: no copy of a multi-GB archive.
 */
async function uploadArtifact(file, name, sha256, retentionDays) {
    const staging = node_path__WEBPACK_IMPORTED_MODULE_2__.join(node_path__WEBPACK_IMPORTED_MODULE_2__.dirname(file), `.together-download-artifact-${(0,node_crypto__WEBPACK_IMPORTED_MODULE_0__.randomBytes)(6).toString('hex')}`);
    const staged = node_path__WEBPACK_IMPORTED_MODULE_2__.join(staging, name);
    const needsStaging = node_path__WEBPACK_IMPORTED_MODULE_2__.basename(file) !== name;
    let moved = false;
    try {
        if (needsStaging) {
            await node_fs__WEBPACK_IMPORTED_MODULE_1__.promises.mkdir(staging);
            try {
                await node_fs__WEBPACK_IMPORTED_MODULE_1__.promises.link(file, staged);
            }
            catch {
                // Some file systems refuse hard links; a rename in the same directory tree is as cheap.
                await node_fs__WEBPACK_IMPORTED_MODULE_1__.promises.rename(file, staged);
                moved = true;
            }
        }
        const source = needsStaging ? staged : file;
        const client = new _actions_artifact__WEBPACK_IMPORTED_MODULE_3__/* .DefaultArtifactClient */ .t9();
        const result = await client
            .uploadArtifact(name, [source], node_path__WEBPACK_IMPORTED_MODULE_2__.dirname(source), { skipArchive: true, retentionDays })
            .catch((error) => {
            throw explainUploadError(error, name);
        });
        if (result.id === undefined)
            throw new _errors_js__WEBPACK_IMPORTED_MODULE_4__/* .ActionError */ .lZ(`The artifact service did not return an id for artifact ${name}, so the upload cannot be confirmed. Run the job again; if it persists, set \`upload-artifact: false\` and upload with actions/upload-artifact.`);
        // Ask the service what it stored, rather than trusting the digest computed while sending.
        const stored = await client.getArtifact(name).then((found) => found.artifact.digest, (error) => {
            throw new _errors_js__WEBPACK_IMPORTED_MODULE_4__/* .ActionError */ .lZ(`Artifact ${name} was uploaded but could not be read back from the artifact service to confirm its sha256 (${(0,_errors_js__WEBPACK_IMPORTED_MODULE_4__/* .messageOf */ .bD)(error)}). Check the run's artifacts, or run the job again.`);
        });
        const digest = (stored ?? '').replace(/^sha256:/, '').toLowerCase();
        // A runner's artifact service always stores the digest; @github/local-action's stand-in, which
        // is configured by LOCAL_ACTION_ARTIFACT_PATH and nothing else sets, stores none.
        if (digest === '' && process.env.LOCAL_ACTION_ARTIFACT_PATH) {
            _log_js__WEBPACK_IMPORTED_MODULE_5__/* .warning */ .$e(`The local stand-in for the artifact service (LOCAL_ACTION_ARTIFACT_PATH is set) stores no sha256, so artifact ${name} was not checked against the file's sha256 ${sha256}.`);
            return { id: result.id, name, url: (0,_artifact_service_js__WEBPACK_IMPORTED_MODULE_7__/* .artifactUrl */ .Wk)(result.id), digest };
        }
        if (digest !== sha256) {
            throw new _errors_js__WEBPACK_IMPORTED_MODULE_4__/* .ActionError */ .lZ(`The artifact service reports sha256 ${digest || '(none)'} for artifact ${name}, but the downloaded file's sha256 is ${sha256}. The upload may be corrupt; run the job again.`);
        }
        return { id: result.id, name, url: (0,_artifact_service_js__WEBPACK_IMPORTED_MODULE_7__/* .artifactUrl */ .Wk)(result.id), digest };
    }
    finally {
        if (moved)
            await (0,_transfer_rename_js__WEBPACK_IMPORTED_MODULE_6__/* .renameWithRetry */ .fU)(staged, file);
        if (needsStaging)
            await node_fs__WEBPACK_IMPORTED_MODULE_1__.promises.rm(staging, { recursive: true, force: true });
    }
}
function explainUploadError(error, name) {
    const message = (0,_errors_js__WEBPACK_IMPORTED_MODULE_4__/* .messageOf */ .bD)(error);
    if (error instanceof Error && error.name === 'GHESNotSupportedError') {
        return new _errors_js__WEBPACK_IMPORTED_MODULE_4__/* .ActionError */ .lZ(`Artifact upload is not available on GitHub Enterprise Server. Set \`upload-artifact: false\`. (${message})`);
    }
    // The client wraps its UsageError in a plain Error, so only the message tells a full quota.
    if (/storage quota|insufficient usage/i.test(message)) {
        return new _errors_js__WEBPACK_IMPORTED_MODULE_4__/* .ActionError */ .lZ(`The artifact storage quota of this account is full, so artifact ${name} could not be uploaded. Delete old artifacts, lower \`retention-days\`, or raise the storage limit in the billing settings. The downloaded file is kept at the \`path\` output.`);
    }
    if (/\(409\)|conflict|already exists/i.test(message)) {
        return new _errors_js__WEBPACK_IMPORTED_MODULE_4__/* .ActionError */ .lZ(`An artifact named ${name} already exists in this workflow run (HTTP 409 Conflict). Set \`artifact-name\` to a name that is unique in the run, for example one that includes the step or the matrix values. The downloaded file is kept at the \`path\` output.`);
    }
    return new _errors_js__WEBPACK_IMPORTED_MODULE_4__/* .ActionError */ .lZ(`Uploading artifact ${name} failed: ${message}. The downloaded file is kept at the \`path\` output.`, {
        cause: error,
    });
}


/***/ })

};
