/** V8 settings of a sidecar process (see v8-flags.js). */
export declare const SIDECAR_V8_FLAGS: readonly string[];
/** V8 settings of every other `trellis` command (see v8-flags.js). */
export declare const CLI_V8_FLAGS: readonly string[];
