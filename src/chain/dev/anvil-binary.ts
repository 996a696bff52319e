import { createRequire } from 'node:module';

// ---------------------------------------------------------------------------- anvil binary

/** npm platform packages of @foundry-rs/anvil, keyed by `${process.platform}-${process.arch}`. */
const ANVIL_PLATFORM_PACKAGES: Readonly<Record<string, string>> = {
  'linux-x64': '@foundry-rs/anvil-linux-amd64',
  'linux-arm64': '@foundry-rs/anvil-linux-arm64',
  'darwin-x64': '@foundry-rs/anvil-darwin-amd64',
  'darwin-arm64': '@foundry-rs/anvil-darwin-arm64',
  'win32-x64': '@foundry-rs/anvil-win32-amd64',
};

/**
 * Path of the native anvil binary. @foundry-rs/anvil's own bin (bin.mjs) is a Node wrapper
 * that spawns `<platform package>/bin/anvil`; we resolve that file directly (from the
 * wrapper package's location, so it also works where only the wrapper is a direct dependency).
 */
export function resolveAnvilBinary(): string {
  const override = process.env.ANVIL_BINARY;
  if (override) return override;
  const platformPackage = ANVIL_PLATFORM_PACKAGES[`${process.platform}-${process.arch}`];
  if (!platformPackage) {
    throw new Error(`@foundry-rs/anvil ships no binary for ${process.platform}-${process.arch}`);
  }
  const fromHere = createRequire(import.meta.url);
  const fromWrapper = createRequire(fromHere.resolve('@foundry-rs/anvil/package.json'));
  const binaryName = process.platform === 'win32' ? 'anvil.exe' : 'anvil';
  return fromWrapper.resolve(`${platformPackage}/bin/${binaryName}`);
}
