// Smoke test of the test VM itself: if this fails, no other kernel suite's
// result means anything. It reads the VM's sysfs directly (node:fs), not through a port.
import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { basename, dirname } from 'node:path';
import { expect } from 'chai';
import { describeVm, guestTopology, inGuest } from './guest.js';
import { guestIommu } from './variant.js';

const isCharDevice = (file: string) => existsSync(file) && statSync(file).isCharacterDevice();

describeVm('test bed (VM kernel, VFIO, edu devices)', function () {
  it('is recognised as the guest', function () {
    expect(inGuest()).to.equal(true);
  });

  it('runs a 6.12 kernel', function () {
    expect(release()).to.match(/^6\.12\.\d+/);
  });

  it('has /dev/iommu and /dev/vfio/vfio', function () {
    expect(isCharDevice('/dev/iommu'), '/dev/iommu').to.equal(true);
    expect(isCharDevice('/dev/vfio/vfio'), '/dev/vfio/vfio').to.equal(true);
  });

  it('has the IOMMU of its variant (vtd: a DMAR unit; virtio: virtio-iommu), and it translates every edu', function () {
    const variant = guestIommu();
    expect(variant, 'VFIO_ENGINE_GUEST_IOMMU').to.be.oneOf(['vtd', 'virtio']);
    const iommus = existsSync('/sys/class/iommu') ? readdirSync('/sys/class/iommu') : [];
    const dmar = iommus.filter((n) => n.startsWith('dmar'));
    const virtioDrv = '/sys/bus/virtio/drivers/virtio_iommu';
    const virtio = existsSync(virtioDrv) ? readdirSync(virtioDrv).filter((n) => /^virtio\d+$/.test(n)) : [];
    // virtio-iommu registers under its PCI function's name, e.g. 0000:00:01.0.
    const virtioNames = virtio.map((v) => basename(dirname(realpathSync(`${virtioDrv}/${v}`))));
    const mine = variant === 'vtd' ? dmar : virtioNames;
    expect(mine, `the ${variant} IOMMU among ${iommus.join(', ')}`).to.have.length.of.at.least(1);
    expect(variant === 'vtd' ? virtio : dmar, 'the other IOMMU is absent').to.deep.equal([]);
    for (const dev of guestTopology()) {
      const unit = basename(readlinkSync(`/sys/bus/pci/devices/${dev.bdf}/iommu`));
      expect(mine, `${dev.bdf} is translated by ${unit}`).to.include(unit);
    }
  });

  it('puts each edu alone on the secondary bus of its own PCIe root port, with a bus reset', function () {
    const ports = new Set<string>();
    for (const dev of guestTopology()) {
      const path = realpathSync(`/sys/bus/pci/devices/${dev.bdf}`);
      const port = basename(dirname(path));
      expect(port, `${dev.bdf}: parent`).to.match(/^0000:00:[0-9a-f]{2}\.[0-7]$/);
      expect(readFileSync(`${dirname(path)}/class`, 'utf8').trim(), `${port}: a PCI bridge`).to.equal(
        '0x060400',
      );
      ports.add(port);
      const bus = dev.bdf.slice(0, 8);
      const onBus = readdirSync('/sys/bus/pci/devices').filter((d) => d.startsWith(bus));
      expect(onBus, `devices on bus ${bus}`).to.deep.equal([dev.bdf]);
      const methods = readFileSync(`${path}/reset_method`, 'utf8').trim().split(/\s+/);
      expect(methods, `${dev.bdf}: reset_method`).to.include('bus');
    }
    expect(ports.size, 'one root port per edu').to.equal(guestTopology().length);
  });

  it('binds at least two edu devices to vfio-pci', function () {
    expect(guestTopology()).to.have.length.of.at.least(2);
  });

  it('puts each edu device in its own IOMMU group', function () {
    const groups = guestTopology().map((d) => d.group);
    expect(groups.every((g) => Number.isInteger(g) && g >= 0)).to.equal(true);
    expect(new Set(groups).size).to.equal(groups.length);
  });

  it('gives each edu device /dev/vfio/<group> and /dev/vfio/devices/vfioN', function () {
    for (const dev of guestTopology()) {
      expect(isCharDevice(`/dev/vfio/${dev.group}`), `${dev.bdf}: /dev/vfio/${dev.group}`).to.equal(true);
      expect(dev.cdev).to.match(/^vfio\d+$/);
      expect(
        isCharDevice(`/dev/vfio/devices/${dev.cdev}`),
        `${dev.bdf}: /dev/vfio/devices/${dev.cdev}`,
      ).to.equal(true);
    }
  });
});
