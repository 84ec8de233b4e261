// unplugin's types import the types of every bundler it supports; those of its optional
// peers that this workspace does not install are declared here, untyped, so that `tsc`
// checks every declaration file (unplugin's included) without them.
declare module '@farmfe/core' {
  export type CompilationContext = any;
  export type JsPlugin = any;
}
declare module '@rsbuild/core' {
  export type RsbuildPlugin = any;
}
declare module 'bun' {
  export type BunPlugin = any;
  export type Loader = any;
  export type PluginBuilder = any;
}
declare module 'unloader' {
  export type Plugin = any;
}
