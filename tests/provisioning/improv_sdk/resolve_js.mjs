// Module hooks: the SDK is built for browser bundlers, which resolve
// extensionless relative imports ("./util/hex-formatter") and take its
// files as ES modules. Node does neither by itself; these hooks do, so the
// SDK runs here unmodified.
const SDK = "/node_modules/improv-wifi-serial-sdk/";

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    const relative = specifier.startsWith("./") || specifier.startsWith("../");
    if (error?.code === "ERR_MODULE_NOT_FOUND" && relative && !specifier.endsWith(".js")) {
      return nextResolve(`${specifier}.js`, context);
    }
    throw error;
  }
}

export async function load(url, context, nextLoad) {
  if (url.startsWith("file:") && url.includes(SDK) && url.endsWith(".js")) {
    return nextLoad(url, { ...context, format: "module" });
  }
  return nextLoad(url, context);
}
