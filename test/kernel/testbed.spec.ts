// Smoke test of the test VM itself: if this fails, no other kernel suite's
// result means anything. Only node:fs/node:os, so it does not depend on src/.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { expect } from 'chai';
import { describeVm, guestTopology, inGuest } from './guest.js';

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

  it('has the emulated Intel IOMMU (DMAR) active', function () {
    const iommus = existsSync('/sys/class/iommu') ? readdirSync('/sys/class/iommu') : [];
    expect(
      iommus.some((n) => n.startsWith('dmar')),
      `IOMMUs: ${iommus.join(', ')}`,
    ).to.equal(true);
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
