import { expect } from 'chai';
import { SimVfs } from '../src/kernel/vfs.js';
import { KernelErrno } from '../src/kernel/errno.js';
import { ERRNO } from '../src/uapi/index.js';

describe('SimVfs: the simulated /sys and /dev', function () {
  const vfs = new SimVfs();
  vfs.addDir('/sys/kernel/iommu_groups/1/devices');
  vfs.addLink(
    '/sys/kernel/iommu_groups/1/devices/0000:00:03.0',
    '../../../../devices/pci0000:00/0000:00:03.0',
  );
  vfs.addFile('/sys/devices/pci0000:00/0000:00:03.0/vendor', '0x1234\n');
  vfs.addLink('/sys/devices/pci0000:00/0000:00:03.0/iommu_group', '../../../kernel/iommu_groups/1');
  vfs.addLink('/sys/bus/pci/devices/0000:00:03.0', '../../../devices/pci0000:00/0000:00:03.0');
  vfs.addFile('/dev/iommu');

  it('follows relative links through every path component', function () {
    expect(vfs.readFile('/sys/bus/pci/devices/0000:00:03.0/vendor')).to.equal('0x1234\n');
    expect(vfs.readdir('/sys/bus/pci/devices/0000:00:03.0/iommu_group/devices')).to.deep.equal([
      '0000:00:03.0',
    ]);
    expect(vfs.readlink('/sys/bus/pci/devices/0000:00:03.0')).to.equal(
      '../../../devices/pci0000:00/0000:00:03.0',
    );
  });

  it('answers like the kernel for what is not there', function () {
    const errno = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as KernelErrno).errno;
      }
      return 0;
    };
    expect(errno(() => vfs.readFile('/sys/nothing'))).to.equal(ERRNO.ENOENT);
    expect(errno(() => vfs.readlink('/dev/iommu'))).to.equal(ERRNO.EINVAL);
    expect(errno(() => vfs.readdir('/dev/iommu'))).to.equal(ERRNO.ENOTDIR);
    expect(errno(() => vfs.readFile('/sys/kernel'))).to.equal(ERRNO.EISDIR);
    expect(vfs.exists('/dev/iommu')).to.equal(true);
    vfs.remove('/dev/iommu');
    expect(vfs.exists('/dev/iommu')).to.equal(false);
    expect(vfs.readdir('/dev')).to.deep.equal([]);
  });
});
