/** The Linux uapi layer: struct layouts, ioctl numbers, constants and errno numbers (Linux 6.12). */
export * from './layout.js';
export * from './errno.js';
export * from './iommufd.js';
export * from './iommufd-test.js';
export * from './vfio.js';
export * from './libc.js';
