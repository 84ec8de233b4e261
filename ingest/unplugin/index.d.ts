import type { UnpluginInstance } from 'unplugin';
import type { ShiplogOptions as CoreOptions } from 'shiplog-collector-core';

export type { BuildEvent, BuildData, DeliveryOutcome } from 'shiplog-collector-core';

/** Options of the webpack, Rspack, Rollup and esbuild plugins (those of shiplog-collector-core). */
export type ShiplogOptions = CoreOptions;

export declare const unplugin: UnpluginInstance<ShiplogOptions | undefined>;
export declare const webpack: UnpluginInstance<ShiplogOptions | undefined>['webpack'];
export declare const rspack: UnpluginInstance<ShiplogOptions | undefined>['rspack'];
export declare const rollup: UnpluginInstance<ShiplogOptions | undefined>['rollup'];
export declare const esbuild: UnpluginInstance<ShiplogOptions | undefined>['esbuild'];
export default unplugin;
